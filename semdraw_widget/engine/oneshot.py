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
from ..limits import is_whole_number
from . import regions
from .blend import Guidance, RegionScene, SelfResidual, denoise, image_tensor, per_layer, slot_noise
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
    """Region-based text-to-image in one call (the seed project's API, its defaults and positional orders).

    >>> smd = StableMultiDiffusionPipeline("cpu", hf_key="tiny")
    >>> image = smd.sample("A photo of the dolomites", height=64, width=64)   # doctest: +SKIP
    >>> image = smd(prompts, masks=masks, height=768, width=768)             # doctest: +SKIP

    Its model: a loaded one first (or as `model=`), or -- the seed project's form -- a device first (or as
    `device=`) with `hf_key`, `sd_version` and the options of `LoadOptions` (the full VAE decodes unless
    `use_tiny_vae=True`); `from_pretrained(hf_key, ...)` loads too (see `ModelPipeline`).

    The seed's defaults: layers get mask blur 1 pixel, mask strength 1 and prompt strength 1; `t_index_list`
    (the slots of the family's schedule; 0, 4, 12, 25, 37 of LCM's 50 steps for SD 1.5) with `mask_type`
    "discrete"; one bootstrapping step from white (`default_bootstrap_steps`, `default_boostrap_mix_steps`,
    spelled as the seed spells it), leak sensitivity 0.2, cover decay 0.3. `has_i2t=True` (the seed's default)
    captions a background image given without a prompt (BLIP-2, loaded on the first such image).
    """

    decodes_with_tiny_vae = False  # the seed's one-shot pipelines decode with the model's own VAE
    schedule_steps: int | None = None  # how many steps t_index_list indexes (None: the family schedule's own)
    default_guidance_rescale = 0.0

    def __init__(
        self,
        model_or_device: Any = None,
        /,
        dtype: torch.dtype | None = None,
        *,
        default_mask_std: float = 1.0,
        default_mask_strength: float = 1.0,
        default_prompt_strength: float = 1.0,
        default_bootstrap_steps: int = 1,
        default_boostrap_mix_steps: float = 1.0,
        default_bootstrap_leak_sensitivity: float | None = 0.2,
        default_preprocess_mask_cover_alpha: float = 0.3,
        t_index_list: Sequence[int] | None = None,
        mask_type: str = "discrete",
        has_i2t: bool = True,
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
        self._take_captioner(has_i2t, False)
        self.default_bootstrap_steps = int(default_bootstrap_steps)
        self.default_boostrap_mix_steps = float(default_boostrap_mix_steps)
        self.default_bootstrap_leak_sensitivity = default_bootstrap_leak_sensitivity
        self.default_preprocess_mask_cover_alpha = float(default_preprocess_mask_cover_alpha)
        self.mask_type = mask_type
        self.region_mode = check_region_mode(region_mode, self.model)
        self.prepare_schedule(t_index_list)

    def prepare_schedule(self, t_index_list: Sequence[int] | None = None, num_inference_steps: int | None = None) -> None:
        """The slots a call runs when it names none: `t_index_list` of the family's schedule in `num_inference_steps`
        steps (None, None: the defaults). The seed project's `prepare_lcm_schedule` (SD 1.5),
        `prepare_lightning_schedule` (SDXL) and `prepare_flashflowmatch_schedule` (SD3) are this."""
        schedule, t_index_list = self.model.slots(t_index_list, num_inference_steps or self.schedule_steps)
        schedule.prepare(t_index_list, self.device, self.dtype)  # checked now, not at the first call
        self.schedule, self.t_index_list = schedule, tuple(t_index_list)

    prepare_lcm_schedule = prepare_lightning_schedule = prepare_flashflowmatch_schedule = prepare_schedule

    @torch.no_grad()
    def __call__(
        self,
        prompts: str | Sequence[str] | None = None,
        negative_prompts: str | Sequence[str] | None = "",
        suffix: str | None = None,
        background: Any = None,
        background_prompt: str | None = None,
        background_negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        prompt_strengths: float | Sequence[float] | None = None,
        masks: Any = None,
        mask_strengths: float | Sequence[float] | None = None,
        mask_stds: float | Sequence[float] | None = None,
        use_boolean_mask: bool = True,
        do_blend: bool = True,
        tile_size: int | None = None,
        bootstrap_steps: int | None = None,
        boostrap_mix_steps: float | None = None,
        bootstrap_leak_sensitivity: float | None = ...,
        preprocess_mask_cover_alpha: float | None = None,
        guidance_rescale: float | None = None,
        output_type: str = "pil",
        *,
        seed: int | None = None,
        t_index_list: Sequence[int] | None = None,
        cfg_type: str | None = None,
        delta: float = 1.0,
        mask_type: str | None = None,
        region_mode: str | None = None,
    ):
        """One image, the arguments in the seed project's order. `masks`: one per prompt (a sequence, one image, or
        a stacked (P, H, W) / (P, 1, H, W) array or tensor; images are read as in `regions.to_mask_tensor`, cut at
        one half with `use_boolean_mask`; masks of another size are resized); None gives every prompt the whole
        canvas. `suffix` appends itself and the background prompt to every prompt. With a background image, or
        neither image nor background prompt (white), `do_blend` pastes the result over it in pixels through the
        blurred masks, as the seed does. An image without `background_prompt` is captioned (`has_i2t`).

        `num_inference_steps` runs that many steps of the family's schedule of that length (None: the pipeline's
        `t_index_list`, or `t_index_list` here). Guidance is full CFG (negative prompts) when guidance_scale > 1,
        unless `cfg_type` says otherwise ("self": residual guidance, whose unconditional prediction is `delta`
        times the residual noise); `guidance_rescale` (full CFG) pulls its spread back toward the text
        prediction's. Beyond the seed: `seed` (None draws one from torch's global generator, so
        `torch.manual_seed` / seed_everything make runs repeatable), `mask_type` (the pipeline's when None),
        `bootstrap_leak_sensitivity=None` (no leak correction), `output_type` "np", "pt" or "latent";
        `region_mode` ("exact" or "attention"; None: the pipeline's) as in `StreamMultiDiffusion`."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES} (got {output_type!r})")
        rescale = self.default_guidance_rescale if guidance_rescale is None else guidance_rescale
        guidance = Guidance("full" if cfg_type is None else cfg_type, 1.0 if guidance_scale is None else guidance_scale, delta, rescale)
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
        if num_inference_steps is not None:
            schedule, t_index_list = self.model.slots(None, num_inference_steps)
        else:
            schedule, t_index_list = self.schedule, self.t_index_list if t_index_list is None else t_index_list
        steps = schedule.prepare(t_index_list, self.device, self.dtype)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else check_seed(seed)
        if bootstrap_leak_sensitivity is ...:
            bootstrap_leak_sensitivity = self.default_bootstrap_leak_sensitivity
        if background is not None and background_prompt is None:
            background_prompt = self.get_text_prompts(background)
        scene = RegionScene(
            self.model, steps, height, width, mask_type=mask_type or self.mask_type,
            cover_alpha=self.default_preprocess_mask_cover_alpha if preprocess_mask_cover_alpha is None else preprocess_mask_cover_alpha,
            bootstrap_steps=self.default_bootstrap_steps if bootstrap_steps is None else bootstrap_steps,
            bootstrap_mix_steps=self.default_boostrap_mix_steps if boostrap_mix_steps is None else boostrap_mix_steps,
            guidance=guidance,
            region_mode=region_mode or self.region_mode,
        )
        scene.set_background(background, background_prompt, background_negative_prompt)
        if suffix is not None:
            prompts = [f"{prompt}{suffix}{background_prompt or ''}" for prompt in prompts]
        for i in range(count):
            layer = scene.new_layer(prompts[i], negatives[i], rhos[i], strengths[i], stds[i])
            scene.set_mask(layer, mask_list[i], boolean_images=use_boolean_mask, resize=True)
            scene.layers.append(layer)
        latent = self._sample(scene, steps, seed, tile_size or self.model.default_tile_size, bootstrap_leak_sensitivity)
        if output_type == "latent":
            return latent
        image = self.model.decode(latent)
        if do_blend and not scene.has_background_layer and scene.layers:
            image = paste_over_background(image, scene, background)
        return to_output(image, output_type)

    def sample(
        self, prompts: str, negative_prompts: str | None = "", height: int | None = None, width: int | None = None,
        num_inference_steps: int | None = 4, guidance_scale: float | None = None, batch_size: int = 1, **kwargs: Any,
    ):
        """Plain text-to-image: the prompt over the whole canvas, in `num_inference_steps` steps (the seed's 4).
        One image; `batch_size` > 1 gives a list of that many (seeds `seed`, `seed` + 1, ...)."""
        kwargs.setdefault("prompt_strengths", 1.0)
        kwargs.setdefault("mask_stds", 0.0)
        settings = dict(height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        masks=None, **kwargs)
        if not is_whole_number(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1 (got {batch_size!r})")
        if batch_size == 1:
            return self(prompts, negative_prompts, **settings)
        seed = settings.pop("seed", None)
        first = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else check_seed(seed)
        return [self(prompts, negative_prompts, seed=first + i, **settings) for i in range(batch_size)]

    def sample_panorama(
        self, prompts: str, negative_prompts: str | None = "", height: int | None = None, width: int | None = None,
        num_inference_steps: int | None = None, guidance_scale: float | None = None, tile_size: int | None = None,
        **kwargs: Any,
    ):
        """A wide image (by default the model's size high, four times as wide: 512 x 2048 for SD 1.5, as in the
        seed): the prompt over the whole canvas, tiled in half-overlapping windows of `tile_size` (by default the
        shorter side, at most the model's size)."""
        size = self.model.default_size
        height = size if height is None else height
        width = 4 * size if width is None else width
        tile_size = min(height, width, size) if tile_size is None else tile_size
        return self.sample(prompts, negative_prompts, height, width, num_inference_steps, guidance_scale, tile_size=tile_size,
                           **kwargs)

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


def paste_over_background(image: torch.Tensor, scene: RegionScene, background: Any) -> torch.Tensor:
    """The seed project's `do_blend`: the generated image (1, 3, H, W) where the layers' masks, cover-decayed and
    blurred (not quantised), add up to 1, the background image (white without one) where they add up to 0, mixed
    between."""
    layers = scene.layers
    masks = torch.stack([layer.mask for layer in layers])
    masks = torch.where(regions.covered_by_higher(masks), masks * scene.cover_alpha, masks)
    cover = regions.gaussian_blur(masks, [layer.mask_std for layer in layers]).sum(0).clamp(0.0, 1.0)
    pixels = torch.ones_like(image) if background is None else image_tensor(background, scene.height, scene.width)
    cover = cover.to(image.device, image.dtype)
    return cover * image + (1.0 - cover) * pixels.to(image.device, image.dtype)


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
