"""StableMultiDiffusionPipeline: one region-based image (or panorama) per call, the non-streaming way.

The same region core as the stream (`blend.py`), run slot by slot: x <- the seed's slot-0 noise;
for each step i: bootstrapping, the model on every active layer, x0 per layer, the masked blend;
then x <- alpha_{i+1} x0 + beta_{i+1} eps_{i+1} with the same fixed per-slot noise as the stream
(and self-guidance's residual moves on with it as in the stream).
With equal settings the stream's frame after T still frames is this image.

Canvases larger than `tile_size` pixels are covered by half-overlapping windows whose linear-ramp
weights sum to one everywhere (`tile_weights`); each window is denoised on its own and the
windows' x0 are blended with those weights at every step (MultiDiffusion panoramas).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..coverage import warn_if_zero_one_uint8
from ..limits import LAYER_SETTING_DEFAULTS
from .blend import Guidance, RegionScene, SelfResidual, denoise, per_layer, slot_noise
from .regional_attention import check_region_mode
from .pipeline import ModelPipeline
from .stream import OUTPUT_TYPES, check_seed, check_size, per_layer_setting, to_output


def tile_starts(length: int, tile: int) -> list[int]:
    """Window starts along one axis: stride tile/2, the last window flush with the end."""
    if length <= tile:
        return [0]
    stride = max(1, tile // 2)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _axis_weights(length: int, tile: int) -> tuple[list[int], torch.Tensor]:
    size = min(tile, length)
    starts = tile_starts(length, tile)
    ramp = torch.minimum(torch.arange(1, size + 1), torch.arange(size, 0, -1)).to(torch.float64)  # linear up, linear down
    raw = torch.zeros(len(starts), length, dtype=torch.float64)
    for i, start in enumerate(starts):
        raw[i, start:start + size] = ramp
    return starts, raw / raw.sum(0, keepdim=True)


def tile_weights(height: int, width: int, tile: int) -> tuple[list[tuple[int, int, int, int]], torch.Tensor]:
    """Windows (top, bottom, left, right) covering an (height, width) latent, and their weights
    (N, height, width): linear ramps over the overlaps, summing to one at every position."""
    rows, row_w = _axis_weights(height, tile)
    cols, col_w = _axis_weights(width, tile)
    th, tw = min(tile, height), min(tile, width)
    windows = [(r, r + th, c, c + tw) for r in rows for c in cols]
    weights = (row_w[:, None, :, None] * col_w[None, :, None, :]).reshape(len(windows), height, width)
    return windows, weights.to(torch.float32)


class StableMultiDiffusionPipeline(ModelPipeline):
    """Region-based text-to-image in one call (seed project's API).

    >>> smd = StableMultiDiffusionPipeline("cpu", hf_key="tiny")
    >>> image = smd.sample("A photo of the dolomites", height=64, width=64)   # doctest: +SKIP
    >>> image = smd(prompts, masks=masks, height=768, width=768)             # doctest: +SKIP

    Its model: a loaded one first (or as `model=`), or -- the seed project's form -- a device first (or as
    `device=`) with `hf_key`, `sd_version` and the options of `LoadOptions`; `from_pretrained(hf_key, ...)`
    loads too (see `ModelPipeline`). The model's family sets the defaults of the number of steps, the tile size and
    `preprocess_mask_cover_alpha` (see `models/__init__.py`).
    """

    def __init__(
        self,
        model_or_device: Any = None,
        /,
        dtype: torch.dtype | None = None,
        *,
        default_mask_std: float = LAYER_SETTING_DEFAULTS["mask_std"],
        default_mask_strength: float = LAYER_SETTING_DEFAULTS["mask_strength"],
        default_prompt_strength: float = LAYER_SETTING_DEFAULTS["prompt_strength"],
        preprocess_mask_cover_alpha: float | None = None,
        bootstrap_leak_sensitivity: float | None = 0.2,
        region_mode: str = "exact",
        model: Any = None,
        device: Any = None,
        hf_key: str | None = None,
        sd_version: str | None = None,
        **load_options: Any,
    ):
        self._take_layer_defaults(default_prompt_strength, default_mask_strength, default_mask_std)
        check_region_mode(region_mode)  # before the model loads
        self._take_model(
            model_or_device, dtype, model=model, device=device, hf_key=hf_key, sd_version=sd_version, load_options=load_options,
        )
        if preprocess_mask_cover_alpha is None:
            preprocess_mask_cover_alpha = self.model.default_cover_alpha
        self.preprocess_mask_cover_alpha = float(preprocess_mask_cover_alpha)
        self.bootstrap_leak_sensitivity = bootstrap_leak_sensitivity
        self.region_mode = check_region_mode(region_mode, self.model)

    @torch.no_grad()
    def __call__(
        self,
        prompts: str | Sequence[str] | None = None,
        negative_prompts: str | Sequence[str] | None = None,
        masks: Any = None,
        background: Any = None,
        background_prompt: str | None = None,
        background_negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 1.0,
        prompt_strengths: float | Sequence[float] | None = None,
        mask_strengths: float | Sequence[float] | None = None,
        mask_stds: float | Sequence[float] | None = None,
        mask_type: str = "discrete",
        bootstrap_steps: int = 1,
        seed: int | None = None,
        tile_size: int | None = None,
        t_index_list: Sequence[int] | None = None,
        cfg_type: str | None = None,
        delta: float = 1.0,
        bootstrap_leak_sensitivity: float | None = ...,
        region_mode: str | None = None,
        output_type: str = "pil",
    ):
        """One image. `masks`: one per prompt (sequence, or a (P, H, W) / (P, 1, H, W) array);
        None gives every prompt the whole canvas. Guidance is full CFG (negative prompts) when
        guidance_scale > 1, unless `cfg_type` says otherwise ("self": residual guidance, whose unconditional
        prediction is `delta` times the residual noise; no kind guides at guidance_scale <= 1).
        `seed=None` draws one from torch's global generator (so `torch.manual_seed` / seed_everything make
        runs repeatable).
        `num_inference_steps=None` is the family's own (5 for SD 1.5 + LCM, 4 for SDXL-Lightning and Flash-SD3).
        `region_mode` ("exact" or "attention"; None: the pipeline's) as in `StreamMultiDiffusion`."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES} (got {output_type!r})")
        guidance = Guidance("full" if cfg_type is None else cfg_type, guidance_scale, delta)
        scale = self.model.vae_scale
        size = self.model.default_size  # 512 for SD 1.5, 1024 for SDXL / SD3
        height = check_size("height", size if height is None else height, scale)
        width = check_size("width", size if width is None else width, scale)
        prompts = [] if prompts is None else [prompts] if isinstance(prompts, str) else list(prompts)
        count = len(prompts)
        mask_list = _split_masks(masks, count, height, width)
        for mask in mask_list:
            if mask is not None:
                warn_if_zero_one_uint8(mask)
        negatives = per_layer(negative_prompts, count, "negative_prompts", "")
        rhos = per_layer_setting("prompt_strength", prompt_strengths, count, self.default_prompt_strength)
        strengths = per_layer_setting("mask_strength", mask_strengths, count, self.default_mask_strength)
        stds = per_layer_setting("mask_std", mask_stds, count, self.default_mask_std)
        if t_index_list is None:
            t_index_list = self.model.schedule.default_indices(num_inference_steps)
        steps = self.model.schedule.prepare(t_index_list, self.device, self.dtype)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else check_seed(seed)
        if bootstrap_leak_sensitivity is ...:
            bootstrap_leak_sensitivity = self.bootstrap_leak_sensitivity
        scene = RegionScene(
            self.model, steps, height, width, mask_type=mask_type, cover_alpha=self.preprocess_mask_cover_alpha,
            bootstrap_steps=bootstrap_steps, guidance=guidance, region_mode=region_mode or self.region_mode,
        )
        scene.set_background(background, background_prompt, background_negative_prompt)
        for i in range(count):
            layer = scene.new_layer(prompts[i], negatives[i], rhos[i], strengths[i], stds[i])
            scene.set_mask(layer, mask_list[i])
            scene.layers.append(layer)
        latent = self._sample(scene, steps, seed, tile_size or self.model.default_tile_size, bootstrap_leak_sensitivity)
        if output_type == "latent":
            return latent
        return to_output(self.model.decode(latent), output_type)

    def sample(self, prompt: str, negative_prompt: str | None = None, height: int | None = None, width: int | None = None, **kwargs: Any):
        """Plain text-to-image: the prompt over the whole canvas."""
        kwargs.setdefault("prompt_strengths", 1.0)
        kwargs.setdefault("mask_stds", 0.0)
        return self(prompt, negative_prompt, masks=None, height=height, width=width, **kwargs)

    def sample_panorama(self, prompt: str, negative_prompt: str | None = None, height: int | None = None, width: int | None = None, **kwargs: Any):
        """A wide image (by default the model's size high, four times as wide): the prompt over the whole
        canvas, tiled in half-overlapping windows."""
        size = self.model.default_size
        height = size if height is None else height
        width = 4 * size if width is None else width
        return self.sample(prompt, negative_prompt, height=height, width=width, **kwargs)

    def _sample(self, scene: RegionScene, steps, seed: int, tile_size: int, leak: float | None) -> torch.Tensor:
        h, w = scene.latent_size
        noise = slot_noise(seed, (len(steps), self.model.latent_channels, h, w), self.device, self.dtype)
        background = scene.background_latent
        batch = scene.batch()
        if batch is None:
            return background
        windows, weights = tile_weights(h, w, max(1, tile_size // self.model.vae_scale))
        weights = weights.to(self.device, self.dtype)
        # Every (window, step) batch up front: cropping recomputes the centring rolls and live items on the
        # host, and each step's batch has its own device index of live items; none of that belongs in the loop.
        crops = [batch.crop(*window) for window in windows] if len(windows) > 1 else [batch]
        per_step = [[crop.select(i) for i in range(len(steps))] for crop in crops]
        x = eps = noise[:1]  # eps: the noise x was made with (bootstrapping uses it)
        residual = eps if scene.guidance.uses_residual else None  # self-guidance's residual noise of x

        def window_x0(step, part, batch):
            """One window's x0 and, with self-guidance, its residual shift (None without)."""
            state = None if residual is None else SelfResidual(residual[part])
            x0 = denoise(self.model, step, x[part], batch, background[part], scene.guidance, eps[part], leak, residual=state)
            return x0, None if state is None else state.shift

        for i in range(len(steps)):
            step = steps.select(slice(i, i + 1))
            if len(windows) == 1:
                x0, shift = window_x0(step, ..., per_step[0][i])
            else:  # the windows' x0 (and residual shifts) blended with their weights
                x0, shift = torch.zeros_like(x), None if residual is None else torch.zeros_like(x)
                for (top, bottom, left, right), weight, window_steps in zip(windows, weights, per_step):
                    part = (..., slice(top, bottom), slice(left, right))
                    part_x0, part_shift = window_x0(step, part, window_steps[i])
                    x0[part] += weight[top:bottom, left:right] * part_x0
                    if shift is not None:
                        shift[part] += weight[top:bottom, left:right] * part_shift
            if i + 1 < len(steps):
                following = steps.select(slice(i + 1, i + 2))
                eps = step.carried_noise(x, x0, noise[i + 1:i + 2])
                x = following.add_noise(x0, eps)
                if residual is not None:
                    residual = following.next_residual(eps, shift)
        return x0


def _split_masks(masks: Any, count: int, height: int, width: int) -> list:
    """One mask per prompt from a sequence or a stacked (P, H, W) / (P, 1, H, W) array; None = whole canvas."""
    if masks is None:
        return [np.ones((height, width), dtype=bool)] * count
    if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim in (3, 4) and not (masks.ndim == 3 and masks.shape[0] == 1 and count == 1):
        masks = list(masks)
    elif not isinstance(masks, (list, tuple)):
        masks = [masks]
    if len(masks) != count:
        raise ValueError(f"got {len(masks)} masks for {count} prompts; give one mask per prompt")
    return list(masks)
