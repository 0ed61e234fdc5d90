"""The region core shared by the stream (stream.py) and the one-shot pipeline (oneshot.py).

`RegionScene` holds a canvas's layers and background and turns them into a `RegionBatch` -- the
device tensors one denoising call needs (per-slot layer weights, per-item conditioning, timesteps,
bootstrap roll indices) -- recomputing only what an update changed. `denoise` is steps 2-4 of
docs/architecture.md's "The algorithm" for any set of slots: bootstrapping with mask-bbox centring, one
model call over (slots x active layers; the slots alone in the attention mode, `regional_attention.py`) --
less the items whose layer has no weight at their slot, which add nothing to the blend (a weak layer at the
noisy slots, a layer outside a tile) -- x0 per layer, and the masked blend:

    x0_t = c * (sum_p M_pt x0_pt / sum_p M_pt) + (1 - c) * background,   c = min(1, sum_p M_pt)

which is "normalised where covered, background where uncovered" with a soft edge for
continuous weights. Blending x0 with the *clean* background latent and then re-noising
(alpha x0 + beta eps) is the same as placing the background noised to each slot's level outside the
layers, since re-noising is linear.

Background: with an image, uncovered area keeps the image (and bootstrapping uses it); with only a
prompt, that prompt is a full-canvas bottom layer (cover decay applies to it like any layer); with
neither, uncovered area is white. A background prompt of '' counts as no prompt. Every layer's
conditioning is lerp(e_background, e_layer, prompt_strength), where e_background is the
embedding of the background prompt ('' -- the unconditional embedding -- when there is none).
A layer prompt of '' is allowed and means "unconditional" in that region.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch

from ..coverage import image_from_array
from ..limits import GUIDANCE_LIMITS, LAYER_SETTING_DEFAULTS, check_number
from . import regional_attention, regions
from .schedulers import SlotSteps

Conditioning = dict[str, torch.Tensor]
CFG_TYPES = ("none", "full", "self")


def slot_noise(seed: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The fixed per-slot noise (T, C, h, w) of a seed; drawn on the CPU so every device gets the same."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def per_layer(value: Any, count: int, name: str, default: Any = None) -> list:
    """A per-layer setting as a list: None -> default for every layer, a scalar -> repeated, a sequence -> checked."""
    if value is None:
        return [default] * count
    if isinstance(value, (str, int, float)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} layers")
    return values


def lerp_cond(base: Conditioning, target: Conditioning, strengths: torch.Tensor) -> Conditioning:
    """Per-item lerp(base[0], target[i], strengths[i])."""
    return {k: torch.lerp(base[k].expand_as(v), v, strengths.view(-1, *([1] * (v.dim() - 1))).to(v.dtype)) for k, v in target.items()}


def cat_cond(parts: Sequence[Conditioning]) -> Conditioning:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def repeat_cond(cond: Conditioning, times: int) -> Conditioning:
    return {k: v.repeat(times, *([1] * (v.dim() - 1))) for k, v in cond.items()}


def centring_roll_indices(masks: torch.Tensor, centre: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, h, w) weights: gather indices (N, h*w) that roll each item so its mask's bounding-box
    centre sits at the canvas centre, and the indices that roll it back. Syncs with the host: call at
    update time, never per frame. An empty mask is not moved, nor is any with `centre=False`."""
    n, h, w = masks.shape
    present = (masks > 0).cpu().numpy() if centre else np.zeros((n, h, w), dtype=bool)
    ys, xs = np.arange(h), np.arange(w)
    forward, backward = [], []
    base = torch.arange(h * w).view(h, w)
    for item in present:
        rows, cols = ys[item.any(1)], xs[item.any(0)]
        dy = h // 2 - (int(rows[0]) + int(rows[-1]) + 1) // 2 if rows.size else 0
        dx = w // 2 - (int(cols[0]) + int(cols[-1]) + 1) // 2 if cols.size else 0
        forward.append(torch.roll(base, (dy, dx), (0, 1)).reshape(-1))
        backward.append(torch.roll(base, (-dy, -dx), (0, 1)).reshape(-1))
    empty = torch.empty(0, h * w, dtype=torch.long)
    stack = lambda rows: (torch.stack(rows) if rows else empty).to(masks.device)
    return stack(forward), stack(backward)


def roll_items(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-item roll of x (N, C, h, w) by precomputed gather indices (N, h*w)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).gather(2, index[:, None].expand(n, c, h * w)).view(n, c, h, w)


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings, checked. As in StreamDiffusion and the seed project, guidance acts
    only at scale > 1 (`active`); at or below 1 every kind runs exactly the unguided path."""

    kind: str = "none"  # "none" | "full" (negative prompts, 2x batch) | "self" (StreamDiffusion's residual CFG)
    scale: float = 1.0  # `guidance_scale`
    delta: float = 1.0  # self-guidance's unconditional prediction is delta * the residual noise
    # Full CFG only: pull the guided prediction's spread back toward the text prediction's by this fraction
    # (diffusers' guidance_rescale, the seed project's SDXL and SD3 default 0.7): it keeps high scales from
    # over-exposing. 0: plain CFG.
    rescale: float = 0.0

    def __post_init__(self):
        if self.kind not in CFG_TYPES:
            supported = ", ".join(repr(kind) for kind in CFG_TYPES)
            raise ValueError(f"cfg_type must be one of {supported} (got {self.kind!r}); StreamDiffusion's 'initialize' is not supported")
        for name, field_name in (("guidance_scale", "scale"), ("delta", "delta"), ("guidance_rescale", "rescale")):
            object.__setattr__(self, field_name, check_number(name, getattr(self, field_name), GUIDANCE_LIMITS[name]))

    @property
    def active(self) -> bool:
        """Guidance changes the prediction (scale > 1 and a kind other than "none")."""
        return self.kind != "none" and self.scale > 1.0

    @property
    def uses_negatives(self) -> bool:
        """Full CFG: a second model pass on the negative prompts."""
        return self.active and self.kind == "full"

    @property
    def uses_residual(self) -> bool:
        """Self-guidance: the residual noise stands in for the unconditional pass (`SelfResidual`)."""
        return self.active and self.kind == "self"


@dataclass
class SelfResidual:
    """Self-guidance's residual for one `denoise` call. In: `noise` (T, C, h, w), each slot's residual noise
    S (`SlotSteps.uncond_prediction`). Out: `shift` (T, C, h, w), set by `denoise` -- the residual's x0 under
    the guided prediction, blended like x0 (`SlotSteps.residual_shift`) -- from which the next slots' residual
    follows (`SlotSteps.next_residual`)."""

    noise: torch.Tensor
    shift: torch.Tensor | None = None


def live_items(masks: torch.Tensor, multiple: int = 1) -> tuple[int, ...] | None:
    """Flat (slot-major) indices of the (slot, layer) items of weights (T, P, 1, h, w) that have some
    weight, or None when all do. With `multiple` > 1, items without weight are added back until the
    count is a multiple of it (harmless: their weight is zero), so that CUDA graphs are captured for a
    few batch sizes rather than for every count. Syncs with the host: call at update time, never per frame."""
    alive = masks.flatten(2).amax(2).gt(0).flatten().tolist()
    live = [i for i, a in enumerate(alive) if a]
    dead = [i for i, a in enumerate(alive) if not a]
    live = sorted(live + dead[: -len(live) % multiple])
    return None if len(live) == len(alive) else tuple(live)


@dataclass
class RegionBatch:
    """Device tensors for one denoising call over T slots and P active layers (slot-major items).

    `live` names the items the model is called on: an item whose layer has no weight at its slot adds
    nothing to that slot's blend, so it is left out of the call (exact). The model call's inputs
    (`call_cond`, `call_uncond`, `call_timesteps`, `live_index`) are derived once, here."""

    masks: torch.Tensor  # (T, P, 1, h, w)
    cond: Conditioning  # (T*P, ...)
    uncond: Conditioning | None  # (T*P, ...) for full CFG
    timesteps: torch.Tensor  # (T*P,)
    boot_slots: int  # the first boot_slots slots are bootstrapped
    roll_forward: torch.Tensor  # (boot_slots*P, h*w)
    roll_back: torch.Tensor
    bootstrap: torch.Tensor  # (boot_slots, C, h, w): the clean latent a bootstrapped item sees outside its mask
    live: tuple[int, ...] | None = None  # None: every item
    skip_empty: bool = True  # False: call the model on every item (the straightforward baseline)
    layers: tuple = ()  # the Layer of each row of `layer_weights` (what `inspect_slots` shows the weights of)
    layer_masks: torch.Tensor | None = None  # (T, P, 1, h, w) when `masks` is not per layer (the attention mode)
    live_index: torch.Tensor | None = field(init=False)
    call_cond: Conditioning = field(init=False)
    call_uncond: Conditioning | None = field(init=False)
    call_timesteps: torch.Tensor = field(init=False)

    def __post_init__(self):
        index = None if self.live is None else torch.tensor(self.live, dtype=torch.long, device=self.masks.device)
        pick = lambda c: c if c is None or index is None else {k: v.index_select(0, index) for k, v in c.items()}
        self.live_index = index
        self.call_cond, self.call_uncond = pick(self.cond), pick(self.uncond)
        self.call_timesteps = self.timesteps if index is None else self.timesteps.index_select(0, index)

    @property
    def num_layers(self) -> int:
        """Rows of `masks`: the model items per slot (the active layers; 1 in the attention mode)."""
        return self.masks.shape[1]

    @property
    def layer_weights(self) -> torch.Tensor:
        """Each active layer's weights (T, P, 1, h, w)."""
        return self.masks if self.layer_masks is None else self.layer_masks

    @property
    def num_calls(self) -> int:
        """Items in the model call."""
        return self.timesteps.shape[0] if self.live is None else len(self.live)

    def select(self, slot: int) -> "RegionBatch":
        """The batch of one slot (the one-shot pipeline's step `slot`)."""
        p = self.num_layers
        items = slice(slot * p, (slot + 1) * p)
        boot = slot < self.boot_slots
        pick = lambda c: None if c is None else {k: v[items] for k, v in c.items()}
        live = None
        if self.live is not None:
            live = tuple(i - slot * p for i in self.live if slot * p <= i < (slot + 1) * p)
            live = None if len(live) == p else live
        return RegionBatch(
            self.masks[slot:slot + 1], pick(self.cond), pick(self.uncond), self.timesteps[items], int(boot),
            self.roll_forward[items] if boot else self.roll_forward[:0],
            self.roll_back[items] if boot else self.roll_back[:0], self.bootstrap[slot:slot + 1] if boot else self.bootstrap[:0],
            live, self.skip_empty,
        )

    def crop(self, top: int, bottom: int, left: int, right: int) -> "RegionBatch":
        """The batch for a window of the latent canvas (tiling); centring and live items are recomputed
        for the window (a layer that does not reach into it is left out of its calls)."""
        masks = self.masks[..., top:bottom, left:right]
        t, p = masks.shape[:2]
        boot = masks[: self.boot_slots].reshape(self.boot_slots * p, *masks.shape[-2:])
        forward, back = centring_roll_indices(boot, centre=self.layer_masks is None)
        live = live_items(masks) if self.skip_empty else None
        bootstrap = self.bootstrap[..., top:bottom, left:right]
        window = lambda c: None if c is None else {
            k: v[..., top:bottom, left:right] if k == regional_attention.WEIGHTS else v for k, v in c.items()
        }
        layer_masks = None if self.layer_masks is None else self.layer_masks[..., top:bottom, left:right]
        return replace(self, masks=masks, cond=window(self.cond), uncond=window(self.uncond), roll_forward=forward,
                       roll_back=back, bootstrap=bootstrap, live=live, layer_masks=layer_masks)


def denoise(
    family: Any,
    steps: SlotSteps,
    x_t: torch.Tensor,
    batch: RegionBatch,
    background: torch.Tensor,
    guidance: Guidance,
    noise: torch.Tensor,
    leak_sensitivity: float | None = None,
    timer: Any = None,
    residual: SelfResidual | None = None,
) -> torch.Tensor:
    """x_t (T, C, h, w) at the slots of `steps` -> blended x0 (T, C, h, w).

    `background` (1, C, h, w: white or the background image's latent) fills uncovered area; `batch.bootstrap`
    is what a bootstrapped item sees outside its mask. `noise` (T, C, h, w) is the noise each slot's latent was
    made with: it noises that bootstrap latent. `residual` is self-guidance's, given exactly when
    `guidance.uses_residual`; its `shift` is set here.
    `leak_sensitivity` (one-shot only) down-weights, at bootstrapped slots, where a layer's x0 still
    looks like the background. `timer.mark("unet")` follows the model call.
    """
    if (residual is not None) != guidance.uses_residual:
        raise ValueError("denoise takes a SelfResidual exactly when self-guidance is active")
    t, c, h, w = x_t.shape
    p, nb = batch.num_layers, batch.boot_slots
    masks = batch.masks
    x = x_t[:, None].expand(t, p, c, h, w)
    if nb:
        booted = steps.select(slice(0, nb)).add_noise(batch.bootstrap, noise[:nb])[:, None]
        x = torch.cat([masks[:nb] * x[:nb] + (1.0 - masks[:nb]) * booted, x[nb:]])
    flat = x.reshape(t * p, c, h, w)

    def roll_booted(items: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Roll the bootstrapped slots' items (centring their masks) or back; the rest stay put."""
        return torch.cat([roll_items(items[: nb * p], index), items[nb * p:]]) if nb else items

    index = batch.live_index

    def model_items(items: torch.Tensor) -> torch.Tensor:
        """(T*P, C, h, w) items as the model call sees them: rolled for centring, only the live ones."""
        items = roll_booted(items, batch.roll_forward)
        return items if index is None else items.index_select(0, index)

    model_in = model_items(flat)
    per_item_residual = None if residual is None else residual.noise[:, None].expand(t, p, c, h, w)
    if model_in.shape[0] == 0:
        out = model_in
    elif guidance.uses_negatives:
        out = family.predict(torch.cat([model_in, model_in]), batch.call_timesteps.repeat(2),
                             cat_cond([batch.call_uncond, batch.call_cond]))
        uncond, text = out.chunk(2)
        out = uncond + guidance.scale * (text - uncond)
        if guidance.rescale:
            spread = lambda x: x.std(dim=tuple(range(1, x.dim())), keepdim=True)
            out = torch.lerp(out, out * (spread(text) / spread(out)), guidance.rescale)
    else:
        out = family.predict(model_in, batch.call_timesteps, batch.call_cond)
        if residual is not None:  # the unconditional prediction where the model saw the residual (rolled, live)
            uncond = model_items(steps.uncond_prediction(x, per_item_residual, guidance.delta).reshape(t * p, c, h, w))
            out = uncond + guidance.scale * (out - uncond)
    if timer is not None:
        timer.mark("unet")
    if index is not None:  # left-out items predict nothing; their weight is zero, so any x0 would do
        out = flat.new_zeros(t * p, c, h, w).index_copy_(0, index, out)
    out = roll_booted(out, batch.roll_back).view(t, p, c, h, w)
    x0 = steps.x0(x, out)
    if leak_sensitivity and nb:
        leak = (x0[:nb] - background[:, None]).pow(2).mean(dim=2, keepdim=True)
        masks = torch.cat([masks[:nb] * (torch.sigmoid(leak / leak_sensitivity) * 2.0 - 1.0), masks[nb:]])
    if residual is not None:  # uncovered area is the clean background: no shift there
        residual.shift = blend_x0(steps.residual_shift(x, per_item_residual, out), masks)
    return blend_x0(x0, masks, background)


def blend_x0(x0: torch.Tensor, masks: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """x0 (T, P, C, h, w), weights (T, P, 1, h, w), background (1 or T, C, h, w; None: zero) -> (T, C, h, w)."""
    total = masks.sum(dim=1)
    weighted = (masks * x0).sum(dim=1)
    mixed = torch.where(total > 0, weighted / total, torch.zeros_like(weighted))
    coverage = total.clamp(max=1.0)
    if background is None:
        return coverage * mixed
    return coverage * mixed + (1.0 - coverage) * background


@dataclass
class Layer:
    prompt: str
    negative_prompt: str
    prompt_strength: float
    mask_strength: float
    mask_std: float
    mask: torch.Tensor | None = None  # (H, W) float coverage on the device; None = empty
    weights: torch.Tensor | None = None  # (T, 1, h, w) quantised, None until computed
    covered: torch.Tensor | None = None  # where higher layers covered this mask when `weights` was computed
    active: bool = False  # some weight > 0


@dataclass
class RegionScene:
    """A canvas's layers (bottom -> top) and background, with incremental device-side products."""

    family: Any
    steps: SlotSteps
    height: int
    width: int
    mask_type: str = "continuous"
    cover_alpha: float = 0.3
    bootstrap_steps: int = 1
    bootstrap_mix_steps: float = 1.0  # see `bootstrap_latents`
    guidance: Guidance = field(default_factory=Guidance)
    layers: list[Layer] = field(default_factory=list)
    background_prompt: str = ""
    background_negative_prompt: str = ""
    background_image: torch.Tensor | None = None  # latent (1, C, h, w)
    skip_empty_items: bool = True  # leave (slot, layer) items without weight out of the model call (exact)
    call_multiple: int = 1  # keep the model call's size a multiple of this (see `live_items`)
    region_mode: str = "exact"  # "exact": a model item per (slot, layer); "attention": per slot (regional_attention.py)

    def __post_init__(self):
        regional_attention.check_region_mode(self.region_mode, self.family)
        if self.mask_type not in regions.MASK_TYPES:
            raise ValueError(f"mask_type must be one of {regions.MASK_TYPES} (got {self.mask_type!r})")
        if self.bootstrap_steps < 0:
            raise ValueError(f"bootstrap_steps must be >= 0 (got {self.bootstrap_steps})")
        mix = self.bootstrap_mix_steps
        if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0 <= mix < float("inf"):
            raise ValueError(f"bootstrap_mix_steps must be a number >= 0 (got {mix!r}); 1 bootstraps the first slot from white")
        self.latent_size = (self.height // self.family.vae_scale, self.width // self.family.vae_scale)
        white = torch.ones(1, 3, self.height, self.width)
        self.white = self.family.encode(white)
        self._background_layer = Layer(self.background_prompt, self.background_negative_prompt, 1.0, 1.0, 0.0)
        self._background_from: list[torch.Tensor] = []  # the painted weights the background's were computed from
        self._batch: RegionBatch | None = None

    # ---- updates ------------------------------------------------------------------------------
    def set_region_mode(self, mode: str) -> None:
        """Switch between the exact and the attention mode; the layers and their weights stay."""
        self.region_mode = regional_attention.check_region_mode(mode, self.family)
        self._batch = None

    def set_background(self, image: Any = None, prompt: str | None = None, negative_prompt: str | None = None) -> None:
        if image is not None:
            self.background_image = self.family.encode(image_tensor(image, self.height, self.width))
        if prompt is not None:
            self.background_prompt = prompt
        if negative_prompt is not None:
            self.background_negative_prompt = negative_prompt
        self._batch = None

    def clear_background_image(self) -> None:
        self.background_image = None
        self._batch = None

    def new_layer(
        self, prompt: str = "", negative_prompt: str = "", prompt_strength: float = LAYER_SETTING_DEFAULTS["prompt_strength"],
        mask_strength: float = LAYER_SETTING_DEFAULTS["mask_strength"], mask_std: float = LAYER_SETTING_DEFAULTS["mask_std"],
    ) -> Layer:
        return Layer(prompt, negative_prompt, float(prompt_strength), float(mask_strength), float(mask_std))

    def mask_tensor(self, mask: Any, **reading: Any) -> torch.Tensor:
        """A layer mask on the device, checked against the canvas size (raises before anything changes); `reading`:
        the options of `regions.to_mask_tensor`."""
        return regions.to_mask_tensor(mask, self.height, self.width, self.family.device, **reading)

    def set_mask(self, layer: Layer, mask: Any, **reading: Any) -> None:
        self.assign_mask(layer, self.mask_tensor(mask, **reading))

    @staticmethod
    def assign_mask(layer: Layer, mask: torch.Tensor) -> None:
        """A mask already checked and on the device (`mask_tensor`); its weights are recomputed at the next batch."""
        layer.mask = mask
        layer.weights = None

    def invalidate(self, layer: Layer | None = None) -> None:
        """Drop cached products: of one layer's masks (its mask settings changed), or of the batch."""
        if layer is not None:
            layer.weights = None
        self._batch = None

    # ---- products ----------------------------------------------------------------------------
    @property
    def background_latent(self) -> torch.Tensor:
        return self.white if self.background_image is None else self.background_image

    def bootstrap_latents(self, slots: int) -> torch.Tensor:
        """What the first `slots` bootstrapped slots see outside a layer's mask (slots, C, h, w): the seed
        project's mix of white and the background, white in full for the first `bootstrap_mix_steps` slots, the
        background from then on, and at the slot where the count ends in a fraction, that much white
        (2.3: white, white, 0.3 white + 0.7 background). Without a background image both are white."""
        ratios = (self.bootstrap_mix_steps - torch.arange(slots, device=self.white.device)).clamp(0.0, 1.0)
        ratios = ratios.to(self.white.dtype).view(-1, 1, 1, 1)
        return ratios * self.white + (1.0 - ratios) * self.background_latent

    @property
    def has_background_layer(self) -> bool:
        return bool(self.background_prompt) and self.background_image is None

    def _weigh_background(self, painted: list[Layer]) -> None:
        """The background prompt's layer takes, at each slot, what the painted layers leave:
        1 - min(1, sum of their weights) (the seed one-shot's rule). So while a background prompt exists, no
        pixel -- painted or not -- falls back to the white latent, however weak, blurred or covered a layer is."""
        bg = self._background_layer
        # The bottom layer is the background prompt itself (prompt strength 1: nothing of the base in it).
        bg.prompt, bg.negative_prompt = self.background_prompt, self.background_negative_prompt
        sources = [layer.weights for layer in painted if layer.active]
        if bg.weights is not None and len(sources) == len(self._background_from) and all(
            new is kept for new, kept in zip(sources, self._background_from)
        ):
            return  # computed from these very weights already
        t, (h, w) = len(self.steps), self.latent_size
        taken = torch.zeros(t, 1, h, w, device=self.family.device)
        for weights in sources:
            taken = taken + weights
        bg.weights, self._background_from = 1.0 - taken.clamp(max=1.0), sources
        bg.active = bool(bg.weights.any())

    def stack(self) -> list[Layer]:
        return ([self._background_layer] if self.has_background_layer else []) + self.layers

    def batch(self) -> RegionBatch | None:
        """The RegionBatch of the active layers (None when no layer has any weight)."""
        if self._batch is None:
            self._batch = self._build()
        return self._batch if self._batch.num_layers else None

    def _build(self) -> RegionBatch:
        stack = self.stack()
        painted = [layer for layer in self.layers if layer.mask is not None]
        if painted:
            stacked = torch.stack([layer.mask for layer in painted])
            covered = regions.covered_by_higher(stacked) & (stacked > 0)  # only cover over the layer itself matters
            stale = [i for i, layer in enumerate(painted) if layer.weights is None or not torch.equal(layer.covered, covered[i])]
            if stale:
                weights = regions.preprocess_masks(
                    torch.stack([painted[i].mask for i in stale]),
                    [painted[i].mask_std for i in stale], [painted[i].mask_strength for i in stale],
                    self.steps.noise_levels, self.mask_type, self.latent_size, self.cover_alpha,
                    covered=covered[stale],
                )
                for row, i in enumerate(stale):
                    painted[i].weights, painted[i].covered = weights[row], covered[i]
                    painted[i].active = bool(weights[row].any())
        for layer in self.layers:
            if layer.mask is None:
                layer.active = False
        if self.has_background_layer:
            self._weigh_background(painted)
        active = [layer for layer in stack if layer.active]
        t, (h, w) = len(self.steps), self.latent_size
        device = self.family.device
        if not active:
            nothing = torch.zeros(t, 0, 1, h, w, device=device, dtype=self.family.dtype)
            empty = torch.zeros(0, h * w, dtype=torch.long, device=device)
            return RegionBatch(nothing, {}, None, self.steps.timesteps[:0], 0, empty, empty, self.bootstrap_latents(0), None,
                               self.skip_empty_items)
        masks = torch.stack([layer.weights for layer in active], dim=1).to(self.family.dtype)  # (T, P, 1, h, w)
        strengths = torch.tensor([layer.prompt_strength for layer in active], device=device)
        base = self.family.encode_prompts([self.background_prompt])
        cond = lerp_cond(base, self.family.encode_prompts([layer.prompt for layer in active]), strengths)
        uncond = None
        if self.guidance.uses_negatives:
            negative_base = self.family.encode_prompts([self.background_negative_prompt])
            negatives = self.family.encode_prompts([layer.negative_prompt for layer in active])
            uncond = lerp_cond(negative_base, negatives, strengths)
        nb = min(self.bootstrap_steps, t)
        if self.region_mode == "attention":
            return self._attention_batch(active, masks, cond, uncond, nb)
        forward, back = centring_roll_indices(masks[:nb].reshape(nb * len(active), h, w))
        timesteps = self.steps.timesteps.repeat_interleave(len(active))
        live = live_items(masks, self.call_multiple) if self.skip_empty_items else None
        return RegionBatch(masks, repeat_cond(cond, t), None if uncond is None else repeat_cond(uncond, t), timesteps, nb,
                           forward, back, self.bootstrap_latents(nb), live, self.skip_empty_items, layers=tuple(active))

    def _attention_batch(self, active: list[Layer], masks: torch.Tensor, cond: Conditioning, uncond: Conditioning | None,
                         nb: int) -> RegionBatch:
        """The attention mode's batch: one item per slot, the layers' conditioning side by side with their
        weights (`regional_attention.slot_conditioning`), and the coverage min(1, sum of weights) as the one
        mask the blend and bootstrapping see. Bootstrapping thus replaces the uncovered part of a bootstrapped
        slot's latent with the noised background, as the exact mode does per layer, but without centring: the
        layers share one image, so none can be moved to the middle."""
        regional_attention.install(self.family)
        t, (h, w) = len(self.steps), self.latent_size
        coverage = masks.sum(dim=1, keepdim=True).clamp(max=1.0)  # (T, 1, 1, h, w)
        forward, back = centring_roll_indices(coverage[:nb].reshape(nb, h, w), centre=False)
        live = live_items(coverage, self.call_multiple) if self.skip_empty_items else None
        per_slot = lambda c: None if c is None else regional_attention.slot_conditioning(c, masks)
        return RegionBatch(coverage, per_slot(cond), per_slot(uncond), self.steps.timesteps, nb, forward, back,
                           self.bootstrap_latents(nb), live, self.skip_empty_items, layers=tuple(active), layer_masks=masks)


def image_to_pil(image: Any):
    """A background image as PIL: PIL as it is, an array by the canvas's rules, a float (3, H, W) / (1, 3, H, W)
    tensor in [0, 1] as its pixels."""
    if isinstance(image, np.ndarray):
        return image_from_array(image)
    if isinstance(image, torch.Tensor):
        pixels = image.detach().float().cpu().reshape(-1, *image.shape[-2:])[:3]
        return image_from_array((pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return image


def image_tensor(image: Any, height: int, width: int) -> torch.Tensor:
    """PIL image, array (the canvas's rules: `coverage.image_from_array`), or float (3, H, W) / (1, 3, H, W)
    tensor in [0, 1] -> (1, 3, H, W) float. Images and arrays are resized to the canvas."""
    if isinstance(image, np.ndarray):
        image = image_from_array(image)
    if hasattr(image, "convert") and hasattr(image, "size"):
        from PIL import Image

        rgb = np.array(image.convert("RGB").resize((width, height), Image.BICUBIC))  # a writable copy: torch warns otherwise
        image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"background image must be a PIL image, numpy array or torch tensor (got {type(image).__name__})")
    image = image if image.dim() == 4 else image[None]
    if tuple(image.shape[1:]) != (3, height, width):
        raise ValueError(f"background image has shape {tuple(image.shape[1:])}; expected (3, {height}, {width})")
    return image.float()
