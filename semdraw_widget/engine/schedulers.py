"""The step formulas, as plain math on precomputed device tensors.

A family's schedule turns a list of indices into its sampling schedule (`t_index_list`) into a
`SlotSteps`: the per-slot constants of the stream batch (model timesteps, noise levels for mask
quantisation) and the two formulas the region core needs -- `x0` (clean estimate from the model's
prediction) and `add_noise` (noising a clean latent to a slot's level). Constants are (T,) device
tensors, viewed to broadcast over dim 0 of (slots, C, h, w) or (slots, layers, C, h, w) batches.

Three schedules, one per family:
- SD 1.5, LCM (with the LCM-LoRA fused): the 50-step LCM schedule of the model's DDPM training
  schedule, alpha_t = sqrt(abar_t), beta_t = sqrt(1 - abar_t), and LCM's boundary condition
  x0 = c_out * (x_t - beta_t * eps) / alpha_t + c_skip * x_t.
- SDXL-Lightning, Euler with "trailing" timesteps (4 steps of a 1000-step DDPM schedule: 999, 749,
  499, 249), epsilon prediction. Euler works on x_sigma = x0 + sigma * eps with
  sigma = sqrt((1 - abar) / abar); the model reads x_sigma / sqrt(sigma^2 + 1), which is exactly the
  DDPM latent x_t = alpha_t x0 + beta_t eps. In that space Euler's x0 = x_sigma - sigma * eps is
  (x_t - beta_t * eps) / alpha_t: the LCM formula with c_skip = 0, c_out = 1.
- SD3 / Flash, flow matching: x_t = (1 - sigma) x0 + sigma eps, the model predicts the velocity
  v = eps - x0, so x0 = x_t - sigma * v; sigmas shifted by the scheduler's `shift` (3.0 for SD3).
Every family re-noises a clean estimate with `add_noise` (alpha_t x0 + beta_t eps) to reach the next
slot; the families differ in which eps (`carried_noise`). The consistency-distilled samplers, LCM and
Flash-SD3 (whose own scheduler takes x0 = x_t - sigma v and re-noises it to the next sigma), draw new
noise at each step: here the fixed, seeded per-slot noise, so a still scene settles (the seed project
does the same for both). SDXL-Lightning's Euler is deterministic: it carries the noise the prediction
implies, eps = (x_t - alpha_t x0) / beta_t, and re-noising x0 with that eps is exactly its step
x_sigma' = x_sigma + (sigma' - sigma) * eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..limits import is_whole_number

# The DDPM training schedule of SD 1.5 and SDXL: what a checkpoint without scheduler/ (a single file) gets.
DEFAULT_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}


def alphas_cumprod(config: dict) -> torch.Tensor:
    """abar_t of a DDPM training schedule (float64), from a diffusers scheduler config."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    else:
        raise ValueError(f"beta_schedule {kind!r} is not supported (use 'scaled_linear' or 'linear')")
    return torch.cumprod(1.0 - betas, dim=0)


def check_t_index_list(t_index_list: Sequence[int], num_steps: int) -> tuple[int, ...]:
    indices = tuple(int(i) for i in t_index_list)
    if len(indices) < 1 or any(b <= a for a, b in zip(indices, indices[1:])) or indices[0] < 0 or indices[-1] >= num_steps:
        raise ValueError(
            f"t_index_list must be strictly increasing indices into the {num_steps}-step schedule, "
            f"in 0..{num_steps - 1} (got {list(t_index_list)})"
        )
    return indices


def check_num_steps(num_inference_steps: int, most: int) -> int:
    """A schedule's length as asked for (`num_inference_steps`), a whole number in 1..`most`."""
    if not is_whole_number(num_inference_steps) or not 1 <= num_inference_steps <= most:
        raise ValueError(
            f"num_inference_steps must be a whole number in 1..{most} (got {num_inference_steps!r}); "
            "leave it None for the model's default"
        )
    return int(num_inference_steps)


@dataclass(frozen=True)
class SlotSteps:
    """Per-slot constants for slots 0..T-1, noisiest first; (T,) tensors on the device."""

    timesteps: torch.Tensor  # (T,): the model's timestep input per slot (long; float for flow matching)
    alpha: torch.Tensor
    beta: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    noise_levels: tuple[float, ...]  # beta_t per slot, for mask quantisation (host floats, used at update time)
    deterministic: bool = False  # Lightning's Euler: carry the predicted noise to the next slot (see `carried_noise`)

    def __len__(self) -> int:
        return len(self.noise_levels)

    def select(self, slots: slice) -> "SlotSteps":
        """The constants of a contiguous range of slots (the one-shot pipeline steps one slot at a time)."""
        return type(self)(
            self.timesteps[slots], self.alpha[slots], self.beta[slots], self.c_skip[slots], self.c_out[slots],
            self.noise_levels[slots], self.deterministic,
        )

    def x0(self, x_t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """LCM boundary condition; x_t, eps: (T, ...) with T matching these slots."""
        c_out, beta, alpha, c_skip = (_per_slot(v, x_t.dim()) for v in (self.c_out, self.beta, self.alpha, self.c_skip))
        return c_out * (x_t - beta * eps) / alpha + c_skip * x_t

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """alpha_t * x0 + beta_t * noise per slot; noise is (T, ...), x0 (T, ...) or (1, ...)."""
        return _per_slot(self.alpha, noise.dim()) * x0 + _per_slot(self.beta, noise.dim()) * noise

    def carried_noise(self, x_t: torch.Tensor, x0: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        """The noise that takes these slots' x0 on to the next slots' level: `fresh` (the seeded per-slot
        noise) for LCM and Flash, the noise implied by x_t and x0 for SDXL-Lightning's deterministic Euler."""
        if not self.deterministic:
            return fresh
        return (x_t - _per_slot(self.alpha, x_t.dim()) * x0) / _per_slot(self.beta, x_t.dim())

    # Self-guidance (StreamDiffusion's residual CFG). Each slot keeps a residual noise S, the noise its latent
    # is taken to hold; delta * S stands in for the unconditional noise prediction, so guidance costs no
    # second model pass. S is not simply the noise the latent was made with: a guided step also moves x0,
    # and the part of that move the residual accounts for goes on with the latent to the next slot.
    def uncond_prediction(self, x_t: torch.Tensor, residual: torch.Tensor, delta: float) -> torch.Tensor:
        """The unconditional prediction self-guidance assumes: delta * S (an eps prediction)."""
        return delta * residual

    def residual_shift(self, x_t: torch.Tensor, residual: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        """x0 of the residual alone (beta * S) under the guided prediction: how far guidance moved x0 in the
        residual's terms (StreamDiffusion's delta_x); blended like x0, it feeds `next_residual`."""
        return self.x0(_per_slot(self.beta, residual.dim()) * residual, guided)

    def next_residual(self, noise: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The residual of latents made at these slots with `noise`, from an x0 whose residual shift was
        `shift`: the shift re-noised to this level (alpha * shift) read as noise (/ beta) on top of `noise`."""
        return noise + _per_slot(self.alpha / self.beta, noise.dim()) * shift


def _per_slot(values: torch.Tensor, dims: int) -> torch.Tensor:
    return values.view(-1, *([1] * (dims - 1)))


def ddpm_slot_steps(
    alphas_cumprod: torch.Tensor, ts: Sequence[int], c_skip: torch.Tensor, c_out: torch.Tensor,
    device: torch.device, dtype: torch.dtype, deterministic: bool = False,
) -> SlotSteps:
    """SlotSteps at DDPM timesteps `ts`: alpha_t = sqrt(abar_t), beta_t = sqrt(1 - abar_t) (also the
    noise levels); `c_skip`, `c_out` (float64, one per slot) are the sampler's boundary condition."""
    abar = alphas_cumprod[list(ts)]
    alpha, beta = abar.sqrt(), (1.0 - abar).sqrt()
    const = lambda values: values.to(device=device, dtype=dtype)
    return SlotSteps(
        timesteps=torch.tensor(ts, dtype=torch.long, device=device),
        alpha=const(alpha), beta=const(beta), c_skip=const(c_skip), c_out=const(c_out),
        noise_levels=tuple(float(b) for b in beta), deterministic=deterministic,
    )


class LCMSchedule:
    """LCM's multistep schedule over a DDPM-trained model (diffusers' LCMScheduler conventions).

    LCM was distilled on 50 of the training schedule's steps (999, 979, ..., 19). A `num_steps`-step run takes
    `num_steps` of them spread evenly from the noisiest, index i * 50 // num_steps (diffusers' `set_timesteps`):
    50 steps are all of them, 4 steps 999, 759, 499, 259. t_index_list indexes this `num_steps`-step schedule.
    """

    original_steps = 50  # the steps LCM was distilled on
    prediction_types = ("epsilon", "v_prediction")

    def __init__(self, scheduler_config: dict, num_steps: int = 50, timestep_scaling: float = 10.0, sigma_data: float = 0.5):
        prediction = scheduler_config.get("prediction_type", "epsilon")
        if prediction not in self.prediction_types:
            raise ValueError(
                f"only epsilon- and v-prediction SD 1.5-family models are supported (this one predicts {prediction!r})"
            )
        self.prediction_type = prediction  # the family turns a v prediction into eps (`SD15.predict`)
        self.config = dict(scheduler_config)
        self.alphas_cumprod = alphas_cumprod(scheduler_config)
        self.timestep_scaling = timestep_scaling
        self.sigma_data = sigma_data
        self.num_steps = check_num_steps(num_steps, self.original_steps)
        k = len(self.alphas_cumprod) // self.original_steps
        distilled = [(i + 1) * k - 1 for i in range(self.original_steps)][::-1]  # 999, 979, ..., 19
        self.timesteps = [distilled[i * self.original_steps // self.num_steps] for i in range(self.num_steps)]

    def with_steps(self, num_steps: int) -> "LCMSchedule":
        """This schedule run in `num_steps` steps (what diffusers calls num_inference_steps)."""
        return type(self)(self.config, num_steps, self.timestep_scaling, self.sigma_data)

    def boundary(self, t: int) -> tuple[float, float]:
        scaled = t * self.timestep_scaling
        c_skip = self.sigma_data**2 / (scaled**2 + self.sigma_data**2)
        c_out = scaled / (scaled**2 + self.sigma_data**2) ** 0.5
        return c_skip, c_out

    def prepare(self, t_index_list: Sequence[int], device: torch.device, dtype: torch.dtype) -> SlotSteps:
        indices = check_t_index_list(t_index_list, self.num_steps)
        ts = [self.timesteps[i] for i in indices]
        bounds = torch.tensor([self.boundary(t) for t in ts], dtype=torch.float64)
        return ddpm_slot_steps(self.alphas_cumprod, ts, bounds[:, 0], bounds[:, 1], device, dtype)


class EulerTrailingSchedule:
    """SDXL-Lightning's sampler: Euler over `num_steps` "trailing" timesteps of the DDPM training schedule.

    Trailing spacing (diffusers' EulerDiscreteScheduler, timestep_spacing="trailing") takes
    t_i = round(N - i * N / num_steps) - 1, i.e. 999, 749, 499, 249 for 4 of N = 1000 steps, so the first
    step starts from (almost) pure noise. t_index_list indexes this `num_steps`-step schedule.
    """

    def __init__(self, scheduler_config: dict, num_steps: int = 4):
        prediction = scheduler_config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"only epsilon-prediction SDXL models are supported (this one predicts {prediction!r})")
        self.config = dict(scheduler_config)
        self.alphas_cumprod = alphas_cumprod(scheduler_config)
        n = len(self.alphas_cumprod)
        self.num_steps = check_num_steps(num_steps, n)
        self.timesteps = [round(n - i * n / self.num_steps) - 1 for i in range(self.num_steps)]

    def with_steps(self, num_steps: int) -> "EulerTrailingSchedule":
        """This sampler over `num_steps` trailing steps (what diffusers calls num_inference_steps)."""
        return type(self)(self.config, num_steps)

    def sigmas(self, indices: Sequence[int]) -> torch.Tensor:
        """Euler's sigma = sqrt((1 - abar) / abar) at the given slots (float64, for reference and tests)."""
        abar = self.alphas_cumprod[[self.timesteps[i] for i in indices]]
        return ((1.0 - abar) / abar).sqrt()

    def prepare(self, t_index_list: Sequence[int], device: torch.device, dtype: torch.dtype) -> SlotSteps:
        indices = check_t_index_list(t_index_list, self.num_steps)
        ts = [self.timesteps[i] for i in indices]
        # Euler's x0 is the LCM formula with c_skip = 0, c_out = 1 (see the module notes)
        c_skip, c_out = torch.zeros(len(ts), dtype=torch.float64), torch.ones(len(ts), dtype=torch.float64)
        return ddpm_slot_steps(self.alphas_cumprod, ts, c_skip, c_out, device, dtype, deterministic=True)


@dataclass(frozen=True)
class FlowSlotSteps(SlotSteps):
    """Flow-matching slots: alpha = 1 - sigma, beta = sigma; the model predicts the velocity v = eps - x0.

    c_skip and c_out are unused (ones and zeros). sigma reaches 1 at the first step, where alpha = 0,
    so x0 must not divide by alpha as the DDPM formula does.
    """

    def x0(self, x_t: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        """x0 = x_t - sigma * v per slot."""
        return x_t - _per_slot(self.beta, x_t.dim()) * velocity

    # Self-guidance on velocities. The model's eps-equivalent prediction is e = x_t + alpha v (the DDPM formula
    # (x_t - beta e) / alpha with c_skip = 0 then gives x0 = x_t - sigma v), so StreamDiffusion's residual CFG
    # carries over by mapping its eps terms to velocities, v = eps - x0: the unconditional velocity is
    # delta * S less R, the clean latent x_t holds if its noise is S, and delta_x becomes
    # beta * (S - v - R). At delta = 1 that is exactly residual CFG on e; delta scales the noise part only
    # (not R), which keeps it finite at sigma = 1. (Treating v as eps pulls x0 to zero: anti-guidance.)
    def residual_clean(self, x_t: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """R = (x_t - sigma S) / (1 - sigma); 0 at sigma = 1, where x_t is all noise (and is S itself)."""
        alpha, beta = _per_slot(self.alpha, x_t.dim()), _per_slot(self.beta, x_t.dim())
        return torch.where(alpha > 0, (x_t - beta * residual) / alpha, torch.zeros_like(x_t))

    def uncond_prediction(self, x_t: torch.Tensor, residual: torch.Tensor, delta: float) -> torch.Tensor:
        return delta * residual - self.residual_clean(x_t, residual)

    def residual_shift(self, x_t: torch.Tensor, residual: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        beta = _per_slot(self.beta, x_t.dim())
        return beta * (residual - guided - self.residual_clean(x_t, residual))


class FlowMatchSchedule:
    """Few-step flow-matching Euler (Flash-SD3): diffusers' FlowMatchEulerDiscreteScheduler timesteps.

    With shift s, shifted(x) = s x / (1 + (s - 1) x). The training sigmas are shifted(i / N) for
    i = N .. 1; a `num_steps` run spaces timesteps linearly from shifted(1) * N to shifted(1 / N) * N and
    shifts them again (diffusers' and Flash's convention): for 4 steps, shift 3, N = 1000, the
    timesteps are 1000, 857.69, 602.15, 8.93 (sigma = t / N). The Flash sampler takes x0 = x_t - sigma v
    and re-noises it to the next sigma, which is the stream batch's x0 + add_noise.

    Noise levels for mask quantisation are sigma / sqrt(1 + sigma^2), as in the seed project: they
    stay below 1 at sigma = 1, so `discrete` masks are not empty at the first step.
    """

    def __init__(self, scheduler_config: dict, num_steps: int = 4):
        self.config = dict(scheduler_config)
        self.shift = float(scheduler_config.get("shift", 1.0))
        self.num_train_timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
        n = self.num_train_timesteps
        self.num_steps = check_num_steps(num_steps, n)
        sigma_max, sigma_min = self.shifted(1.0), self.shifted(1.0 / n)
        raw = torch.linspace(sigma_max * n, sigma_min * n, self.num_steps, dtype=torch.float64) / n
        self.sigmas = self.shifted(raw)
        self.timesteps = (self.sigmas * n).tolist()

    def shifted(self, sigma):
        return self.shift * sigma / (1.0 + (self.shift - 1.0) * sigma)

    def with_steps(self, num_steps: int) -> "FlowMatchSchedule":
        """This sampler over `num_steps` steps (what diffusers calls num_inference_steps)."""
        return type(self)(self.config, num_steps)

    def prepare(self, t_index_list: Sequence[int], device: torch.device, dtype: torch.dtype) -> FlowSlotSteps:
        indices = check_t_index_list(t_index_list, self.num_steps)
        sigma = self.sigmas[list(indices)]
        const = lambda values: values.to(device=device, dtype=dtype)
        return FlowSlotSteps(
            timesteps=(sigma * self.num_train_timesteps).to(device=device, dtype=torch.float32),
            alpha=const(1.0 - sigma), beta=const(sigma),
            c_skip=torch.ones(len(indices), device=device, dtype=dtype), c_out=torch.zeros(len(indices), device=device, dtype=dtype),
            noise_levels=tuple(float(s) for s in sigma / (1.0 + sigma**2).sqrt()),
        )
