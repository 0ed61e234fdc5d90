"""StreamMultiDiffusion: region-based generation as a stream batch, one frame per call.

The T slots of `t_index_list` hold T latents at decreasing noise levels. One call (docs/architecture.md,
"The algorithm"):
1. slot 0 gets the seed's fixed noise (or fresh noise each frame with `fresh_noise=True`);
   slots 1..T-1 come from the buffer;
2.-4. bootstrapping, one model call over (slots x active layers), x0 per layer, masked blend
   (`blend.denoise`); with `region_mode="attention"` the call is over the slots alone, the layers
   meeting inside cross-attention (`regional_attention.py`);
5. the last slot's x0 is the frame; slot i+1 <- alpha_{i+1} x0_i + beta_{i+1} eps_i, where eps_i is
   the fixed per-slot noise (LCM, Flash-SD3) or the noise x_t and x0 imply (SDXL-Lightning's Euler;
   `SlotSteps.carried_noise`), so a still scene converges to a still image after T frames (`converged`).
   With self-guidance, each slot's residual noise moves on with its latent as StreamDiffusion's does
   (`SlotSteps.next_residual`).

Updates change only what they touch (embeddings are cached per text, a layer's masks are
recomputed only when its mask, its settings or the cover from layers above change) and all of
the work that needs the host happens there (`apply_updates` does it ahead of a frame); a frame itself
never waits on the device.

Fast path, all optional and exact (the same arithmetic, so the same frames up to fp16 noise):
`compile=True` replays the model from CUDA graphs, one per batch size, and `compile="inductor"`
compiles it too, in the background if asked (`accel.py`; `warm_up` prepares them);
`decode(latent, "pt")` keeps the uint8 frame on the device and `HostFrame` copies it into pinned
memory without blocking, so decoding, the copy and JPEG encoding overlap the next frame (the
streaming loop in `streaming.py` does this). Always on: a (slot, layer) item whose layer has no
weight at that slot is left out of the model call (`blend.live_items`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from .accel import AcceleratedPredictor, compile_mode
from .blend import Guidance, RegionScene, SelfResidual, cat_cond, denoise, per_layer, slot_noise
from .pipeline import ModelPipeline, check_layer_setting
from .updates import BackgroundState, PendingUpdates
from .regional_attention import check_region_mode
from ..coverage import warn_if_zero_one_uint8
from ..limits import LAYER_SETTING_DEFAULTS, check_seed

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def check_size(name: str, value: int, multiple: int = 8) -> int:
    value = int(value)
    if value <= 0 or value % multiple:
        low = max(multiple, value // multiple * multiple)
        high = low + multiple if value > low else low
        hint = f"try {low} or {high}" if low != high else f"try {low}"
        raise ValueError(f"{name} must be a positive multiple of {multiple} (got {value}); {hint}")
    return value


def per_layer_setting(setting: str, values: Any, count: int, default: float | None = None) -> list:
    """`blend.per_layer` for a layer setting given as `setting + "s"` (one value, or one per layer), each checked."""
    name = f"{setting}s"
    return [None if value is None else check_layer_setting(setting, value, name) for value in per_layer(values, count, name, default)]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> uint8 HxWx3 on the same device."""
    return (images[0] * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def to_output(images: torch.Tensor, output_type: str):
    """(1, 3, H, W) in [0, 1] -> PIL image, uint8 HxWx3 numpy array, or uint8 HxWx3 device tensor."""
    return rgb_output(to_uint8(images), output_type)


def rgb_output(rgb: torch.Tensor, output_type: str):
    """uint8 HxWx3 device tensor -> itself ("pt", no wait), a host numpy array ("np") or a PIL image ("pil")."""
    if output_type == "pt":
        return rgb
    array = rgb.cpu().numpy()
    if output_type == "np":
        return array
    from PIL import Image

    return Image.fromarray(array)


def device_event(tensor: torch.Tensor) -> Any:
    """A CUDA event recorded now on the current stream of `tensor`'s device (None on the CPU)."""
    if tensor.device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(tensor.device))
    return event


class HostFrame:
    """A uint8 HxWx3 frame on its way to host memory.

    From a CUDA tensor the copy goes into pinned memory without blocking and records an event;
    `array()` waits for it, so only the thread that needs the pixels (the encoder) ever waits.
    """

    def __init__(self, rgb: Any):
        self._ready = None
        if isinstance(rgb, np.ndarray):
            self._host = torch.from_numpy(rgb)
        elif rgb.device.type == "cuda":
            self._host = torch.empty(rgb.shape, dtype=rgb.dtype, pin_memory=True)
            self._host.copy_(rgb, non_blocking=True)
            self._ready = device_event(rgb)
        else:
            self._host = rgb.contiguous()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._host.shape)

    def ready(self) -> bool:
        return self._ready is None or self._ready.query()

    def array(self) -> np.ndarray:
        if self._ready is not None:
            self._ready.synchronize()
        return self._host.numpy()


class FrameTimer:
    """Per-frame stage times in ms: CUDA events on CUDA (read lazily, so no sync in the frame), perf_counter otherwise."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._marks: list[tuple[str, Any]] = []

    def start(self) -> None:
        self._marks = []
        self.mark("start")

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append((name, event))
        else:
            self._marks.append((name, time.perf_counter()))

    def result(self) -> dict[str, float]:
        if len(self._marks) < 2:
            return {}
        if self.cuda:
            self._marks[-1][1].synchronize()
            span = lambda a, b: a.elapsed_time(b)
        else:
            span = lambda a, b: (b - a) * 1e3
        return {name: span(prev, now) for (_, prev), (name, now) in zip(self._marks, self._marks[1:])}

    def detach(self) -> "FrameTimer":
        """This frame's marks, to be read later (e.g. by a thread that waits for the frame anyway)."""
        copy = FrameTimer.__new__(FrameTimer)
        copy.cuda, copy._marks = self.cuda, list(self._marks)
        return copy


class StreamMultiDiffusion(ModelPipeline):
    """Streaming region-based generation (SemanticDraw / StreamMultiDiffusion), one frame per call.

    >>> smd = StreamMultiDiffusion("cpu", hf_key="tiny", height=64, width=64)
    >>> smd.update_single_layer(idx=0, prompt="a red apple", mask=mask)   # doctest: +SKIP
    >>> frame = smd()                                                       # doctest: +SKIP

    Its model: a loaded one first (or as `model=`), or -- the seed project's form -- a device first (or as
    `device=`) with `hf_key`, `sd_version` and the options of `LoadOptions`; `from_pretrained(hf_key, ...)`
    loads too (see `ModelPipeline`). The model's family sets the defaults of `t_index_list` and
    `preprocess_mask_cover_alpha` (see `models/__init__.py`).

    The seed project's options, as there: `t_index_list` indexes a `num_inference_steps`-step schedule (None: the
    family's own: LCM's 50 steps, the 4 of SDXL-Lightning and Flash-SD3); `bootstrap_mix_steps` (see
    `RegionScene.bootstrap_latents`); `autoflush` (after a change of prompts, prompt strengths, background or
    seed, the next call first runs `flush()`, so the frame it returns shows the change settled; off by
    default here, see the README's differences); `has_i2t` (caption a background image given without a prompt,
    BLIP-2 loaded on first use; `i2t_to_device` runs it on this device rather than the CPU); `lora_weight` (with
    the options of `LoadOptions`); `frame_buffer_size` 1 (the only size the seed's streams run);
    `prompt_queue_capacity` (how many layer requests `update` holds before `commit`); `use_xformers` is taken
    and not needed (attention runs through PyTorch's fused kernels).

    `compile=True` (or "cudagraph") replays the model from CUDA graphs on CUDA devices; "inductor"
    also runs it through torch.compile (on a CPU too). Until `warm_up()` has prepared the current
    batch size, frames run eagerly (see `accel.py`).

    `region_mode="exact"` (the default) calls the model on every (slot, layer) item and blends the layers'
    estimates; "attention" calls it once per slot with the layers' prompts confined to their regions inside
    cross-attention (SD 1.5 and SDXL; `regional_attention.py`), so a frame costs the same whatever the number
    of layers. Settable later (`region_mode`).
    """

    def __init__(
        self,
        model_or_device: Any = None,
        /,
        dtype: torch.dtype | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        t_index_list: Sequence[int] | None = None,
        num_inference_steps: int | None = None,
        seed: int = 2024,
        cfg_type: str = "none",
        guidance_scale: float = 1.2,
        delta: float = 1.0,
        autoflush: bool = False,
        bootstrap_steps: int = 1,
        bootstrap_mix_steps: float = 1.0,
        mask_type: str = "continuous",
        default_mask_std: float = LAYER_SETTING_DEFAULTS["mask_std"],
        default_mask_strength: float = LAYER_SETTING_DEFAULTS["mask_strength"],
        default_prompt_strength: float = LAYER_SETTING_DEFAULTS["prompt_strength"],
        preprocess_mask_cover_alpha: float | None = None,
        has_i2t: bool = False,
        i2t_to_device: bool = False,
        frame_buffer_size: int = 1,
        prompt_queue_capacity: int = 256,
        use_xformers: bool = True,
        fresh_noise: bool = False,
        profile: bool = False,
        compile: bool | str = False,
        region_mode: str = "exact",
        model: Any = None,
        device: Any = None,
        hf_key: str | None = None,
        sd_version: str | None = None,
        **load_options: Any,
    ):
        guidance = Guidance(cfg_type, guidance_scale, delta)  # checked before the model loads
        if frame_buffer_size != 1:
            raise ValueError(
                f"frame_buffer_size={frame_buffer_size!r}: only 1 is supported (one frame per call, as the seed project's "
                "streams run); call the pipeline once per frame"
            )
        check_region_mode(region_mode)
        self._take_layer_defaults(default_prompt_strength, default_mask_strength, default_mask_std)
        self._take_model(
            model_or_device, dtype, model=model, device=device, hf_key=hf_key, sd_version=sd_version, load_options=load_options,
        )
        self._take_captioner(has_i2t, i2t_to_device)
        scale = self.model.vae_scale
        size = self.model.default_size  # 512 for SD 1.5, 1024 for SDXL / SD3
        self._height = check_size("height", size if height is None else height, scale)
        self._width = check_size("width", size if width is None else width, scale)
        schedule, t_index_list = self.model.slots(t_index_list, num_inference_steps)
        if preprocess_mask_cover_alpha is None:
            preprocess_mask_cover_alpha = self.model.stream_cover_alpha
        self.steps = schedule.prepare(t_index_list, self.device, self.dtype)
        self._leaving = self.steps.select(slice(None, -1))  # the slots whose x0 moves on to the next slot
        self._renoise = self.steps.select(slice(1, None))
        self.autoflush = bool(autoflush)
        self.fresh_noise = bool(fresh_noise)
        self.profile = bool(profile)
        self.compile = compile_mode(compile)
        # what frames call `predict` on: the model itself, or its compiled / CUDA-graph form
        self.predictor = AcceleratedPredictor(self.model, self.compile) if self.compile else self.model
        self.unet_calls = 0  # model calls made by frames (a still, converged scene makes none)
        self._timer = FrameTimer(self.device)
        self._scene = RegionScene(
            self.model, self.steps, self._height, self._width, mask_type=mask_type,
            cover_alpha=float(preprocess_mask_cover_alpha), bootstrap_steps=int(bootstrap_steps),
            bootstrap_mix_steps=bootstrap_mix_steps, guidance=guidance, region_mode=region_mode,
        )
        if self.compile and self.predictor.uses_graphs:  # one graph per multiple of the slot count, not per item count
            self._scene.call_multiple = self.num_slots
        self._pending = PendingUpdates(prompt_queue_capacity)
        self._background_image: Any = None  # the image as given (`background`), its latent in the scene
        self.reset_seed(seed=seed)

    # ---- properties -------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def num_layers(self) -> int:
        return len(self._scene.layers)

    @property
    def region_mode(self) -> str:
        """"exact" (a model item per slot and layer, blended) or "attention" (one per slot, each layer's prompt
        confined to its region in cross-attention: the cost stays that of one layer). Settable while
        streaming: the canvas and the frames in flight stay, only the next frames are made the other way."""
        return self._scene.region_mode

    @region_mode.setter
    def region_mode(self, mode: str) -> None:
        if mode != self._scene.region_mode:
            self._scene.set_region_mode(mode)
            self._changed()

    @property
    def num_slots(self) -> int:
        return len(self.steps)

    @property
    def converged(self) -> bool:
        """True once the scene has been still for at least `num_slots` frames with fixed noise."""
        return not self.fresh_noise and self._still_frames >= self.num_slots

    @property
    def timings(self) -> dict[str, float]:
        """Milliseconds of the last frame's `unet`, `blend` and `decode` stages (only with `profile=True`)."""
        return self._timer.result() if self.profile else {}

    def frame_stages(self) -> FrameTimer | None:
        """The last frame's stage marks, read later with `.result()` (only with `profile=True`).

        Unlike `timings`, taking them does not wait for the device."""
        return self._timer.detach() if self.profile else None

    @property
    def needs_warm_up(self) -> bool:
        """True when `compile` is on and `warm_up` has work to do now: a batch size in use without its
        graph, or a compile to start (not one already running in the background)."""
        return bool(self.compile) and self.predictor.needs_warm_up

    @property
    def compiling(self) -> bool:
        """True while `compile="inductor"` compiles the model in the background (frames run uncompiled)."""
        return bool(self.compile) and self.predictor.compiling

    @property
    def compile_error(self) -> str | None:
        """Why torch.compile or CUDA-graph capture failed, if one did (frames then run without it)."""
        if not self.compile:
            return None
        errors = [e for e in (self.predictor.compile_error, self.predictor.capture_error) if e]
        return "; ".join(errors) or None

    def warm_up(self, block: bool = True) -> int:
        """Prepare the fast path for the current batch and every batch size met so far (compile mode only).

        Graph captures take under a second per batch size. `compile="inductor"` first compiles the
        model (about a minute on a GPU, once for all batch sizes): here with `block=True`, or in a
        background thread with `block=False`, while frames keep running uncompiled (`compiling`).
        Returns how many batch sizes got their fast path."""
        if not self.compile:
            return 0
        inputs = self.batch_inputs()
        if inputs is not None:
            self.predictor.expect(*inputs)
        with torch.no_grad():
            return self.predictor.warm_up(block=block)

    def batch_inputs(self) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
        """The model call of the current batch -- (latents, timesteps, conditioning), latents zero -- or
        None without active layers. For warm-up and for timing the bare model call (benchmarks)."""
        batch = self._scene.batch()
        if batch is None:
            return None
        (h, w) = self._scene.latent_size
        latents = self._noise.new_zeros(batch.num_calls, self.model.latent_channels, h, w)
        if self._scene.guidance.uses_negatives:
            return torch.cat([latents, latents]), batch.call_timesteps.repeat(2), cat_cond([batch.call_uncond, batch.call_cond])
        return latents, batch.call_timesteps, batch.call_cond

    def apply_updates(self) -> None:
        """Do the update-time work now (mask preprocessing, batch assembly, the host syncs they need),
        so that the next frame only queues device work."""
        self._scene.batch()

    # ---- state ------------------------------------------------------------------------------
    @property
    def background(self) -> "BackgroundState":
        """The background as the engine holds it: the image as given (None: white), its prompts and latent."""
        scene = self._scene
        return BackgroundState(self._background_image, scene.background_prompt, scene.background_negative_prompt,
                               scene.background_latent)

    def reset_seed(self, generator: Any = None, seed: int | None = None) -> None:
        """New fixed per-slot noise from `seed` (the current one when None); restarts the buffer. `reset_seed(7)` or
        the seed project's `reset_seed(generator, seed)`: a torch.Generator first is re-seeded with the seed too (the
        per-slot noise is drawn on the CPU from the seed alone, so every device gets the same frames)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            if seed is not None:
                raise TypeError(f"reset_seed got two seeds ({generator!r} and seed={seed!r}): pass one")
            generator, seed = None, generator
        seed = self.seed if seed is None else check_seed(seed)
        c, (h, w) = self.model.latent_channels, self._scene.latent_size
        noise = slot_noise(seed, (self.num_slots, c, h, w), self.device, self.dtype)
        generator = (generator or torch.Generator(self.device)).manual_seed(seed)
        self.seed, self._noise, self._generator = seed, noise, generator
        self._restart_buffer()
        self._flush_due = True

    def _restart_buffer(self) -> None:
        self._carried = self._noise[1:]  # the noise each buffered latent was made with (see `_step`)
        # self-guidance's residual noise of the buffered latents (None without it: no cost then)
        self._residual = self._carried if self._scene.guidance.uses_residual else None
        self._buffer = self._renoise.add_noise(self._scene.background_latent, self._carried)
        self._still_frames = 0
        self._last_slots = None

    def flush(self) -> None:
        """Restart the buffer and run `num_slots` frames (not decoded), so the next frame is settled."""
        self._restart_buffer()
        for _ in range(self.num_slots):
            self._step()
        self._flush_due = False

    def _changed(self, settles: bool = False) -> None:
        """The scene changed; `settles`: a change after which `autoflush` settles the stream before the next frame
        (prompts, prompt strengths, the background: the seed project's; a mask alone never, so painting stays live)."""
        self._still_frames = 0
        self._flush_due |= settles

    def update_background(self, image: Any = None, prompt: str | None = None, negative_prompt: str | None = None) -> None:
        """Set the background image (PIL, uint8 HxWx3, or float tensor; `False` removes it), prompt, negative prompt.

        None leaves that part unchanged. A prompt of '' means no background prompt. An image given without a
        prompt gets one from `get_text_prompts` when the pipeline captions (`has_i2t=True`), as in the seed project.
        """
        scene = self._scene
        if image is False:
            if scene.background_image is not None:
                scene.clear_background_image()
                self._background_image = None
                self._changed(settles=True)
            image = None
        if image is not None and prompt is None and self.captioner is not None:
            prompt = self.get_text_prompts(image)
        changed = image is not None
        changed |= prompt is not None and prompt != scene.background_prompt
        changed |= negative_prompt is not None and negative_prompt != scene.background_negative_prompt
        if changed:
            scene.set_background(image, prompt, negative_prompt)
            if image is not None:
                self._background_image = image
            self._changed(settles=True)

    def update_single_layer(
        self,
        idx: int | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        suffix: str | None = None,
        prompt_strength: float | None = None,
        mask: Any = None,
        mask_strength: float | None = None,
        mask_std: float | None = None,
    ) -> None:
        """Edit layer `idx` (0 is the bottom one), or add a layer on top when `idx` is None or past the last layer
        (the seed project's rule). None leaves a setting unchanged; a new layer takes the defaults.

        A new layer needs a prompt ('' for an unconditional one): asked for without one, nothing is added and a
        warning says so, as in the seed project. `suffix` makes the prompt `prompt + suffix + background prompt`.
        `mask`: see `regions.to_mask_tensor` (an opaque PIL image covers where it is dark, as in the seed project).
        """
        scene, n = self._scene, self.num_layers
        if idx is not None and (isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or idx < 0):
            raise IndexError(
                f"layer index {idx!r} is not a layer: use 0..{n - 1} to edit one, or {n} (or None) to add one on top"
            )
        appending = idx is None or idx >= n
        if appending and prompt is None:
            warnings.warn(
                f"update_single_layer(idx={idx}) adds a layer, and a new layer needs a prompt: nothing was added. "
                "Pass prompt=... ('' for a layer without one).",
                UserWarning, stacklevel=2,
            )
            return
        # every check before the first change, so a rejected call leaves the scene as it was
        prompt_strength, mask_strength, mask_std = (
            None if value is None else check_layer_setting(setting, value)
            for setting, value in (("prompt_strength", prompt_strength), ("mask_strength", mask_strength), ("mask_std", mask_std))
        )
        if mask is not None:
            warn_if_zero_one_uint8(mask)
            mask = scene.mask_tensor(mask)
        if prompt is not None and suffix is not None:
            prompt = f"{prompt}{suffix}{scene.background_prompt}"
        if appending:
            scene.layers.append(scene.new_layer(
                prompt, negative_prompt or "",
                self.default_prompt_strength if prompt_strength is None else prompt_strength,
                self.default_mask_strength if mask_strength is None else mask_strength,
                self.default_mask_std if mask_std is None else mask_std,
            ))
            if mask is not None:
                scene.assign_mask(scene.layers[-1], mask)
            scene.invalidate()
            self._changed(settles=True)
            return
        layer = scene.layers[idx]
        changed = settles = False
        for name, value in (("prompt", prompt), ("negative_prompt", negative_prompt), ("prompt_strength", prompt_strength)):
            if value is not None and value != getattr(layer, name):
                setattr(layer, name, type(getattr(layer, name))(value))
                changed = settles = True
        for name, value in (("mask_strength", mask_strength), ("mask_std", mask_std)):
            if value is not None and float(value) != getattr(layer, name):
                setattr(layer, name, float(value))
                scene.invalidate(layer)
                changed = True
        if mask is not None:
            if layer.mask is None or not torch.equal(layer.mask, mask):  # the same mask again keeps its weights
                scene.assign_mask(layer, mask)
                changed = True
        if changed:
            scene.invalidate()
            self._changed(settles)

    def update_layers(
        self,
        prompts: str | Sequence[str],
        negative_prompts: str | Sequence[str] | None = None,
        suffix: str | None = None,
        prompt_strengths: float | Sequence[float] | None = None,
        masks: Any = None,
        mask_strengths: float | Sequence[float] | None = None,
        mask_stds: float | Sequence[float] | None = None,
    ) -> None:
        """Replace all layers: one per prompt, bottom to top. Scalars apply to every layer; `masks` is a sequence,
        one image, or a stacked (P, H, W) / (P, 1, H, W) array or tensor. As in the seed project, prompts without a
        mask get an empty one and masks without a prompt are left out, each with a warning."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        count = len(prompts)
        negatives = per_layer(negative_prompts, count, "negative_prompts", "")
        mask_list = self._mask_list(masks, count)
        # every check before the old layers go, so a rejected call leaves the scene as it was
        for mask in mask_list:
            if mask is not None:
                warn_if_zero_one_uint8(mask)
        mask_list = [None if mask is None else self._scene.mask_tensor(mask) for mask in mask_list]
        strengths = per_layer_setting("mask_strength", mask_strengths, count)
        stds = per_layer_setting("mask_std", mask_stds, count)
        rhos = per_layer_setting("prompt_strength", prompt_strengths, count)
        self._scene.layers.clear()
        self._scene.invalidate()
        for i in range(count):
            self.update_single_layer(i, prompts[i], negatives[i], suffix, rhos[i], mask_list[i], strengths[i], stds[i])
        self._changed(settles=True)

    def update_masks(
        self,
        masks: Any = None,
        mask_strengths: float | Sequence[float] | None = None,
        mask_stds: float | Sequence[float] | None = None,
    ) -> None:
        """New masks (and their strengths and blurs) for all layers at once, in layer order; the prompts stay.
        As in the seed project, layers beyond the masks given get an empty mask."""
        count = self.num_layers
        mask_list = self._mask_list(masks, count)
        for mask in mask_list:
            if mask is not None:
                warn_if_zero_one_uint8(mask)
        tensors = [torch.zeros(self.height, self.width, device=self.device) if m is None else self._scene.mask_tensor(m)
                   for m in mask_list]
        strengths = per_layer_setting("mask_strength", mask_strengths, count, self.default_mask_strength)
        stds = per_layer_setting("mask_std", mask_stds, count, self.default_mask_std)
        for i in range(count):
            self.update_single_layer(i, mask=tensors[i], mask_strength=strengths[i], mask_std=stds[i])

    def _mask_list(self, masks: Any, count: int) -> list:
        """One mask (or None) per layer from what `update_layers` / `update_masks` take, fitted to `count` as the
        seed project does: missing masks are None, extra ones dropped, each with a warning."""
        if masks is None:
            return [None] * count
        if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim >= 3 and not (masks.ndim == 3 and masks.shape[0] == 1 and count <= 1):
            masks = list(masks)
        elif not isinstance(masks, (list, tuple)):
            masks = [masks]
        masks = list(masks)
        if len(masks) < count:
            warnings.warn(f"{count} prompts but {len(masks)} masks: the last {count - len(masks)} layer(s) get an empty "
                          "mask until one is given", UserWarning, stacklevel=3)
        elif len(masks) > count:
            warnings.warn(f"{len(masks)} masks but {count} prompts: the last {len(masks) - count} mask(s) are left out",
                          UserWarning, stacklevel=3)
        return (masks + [None] * count)[:count]

    def register_all(
        self,
        prompts: str | Sequence[str],
        masks: Any,
        background: Any,
        background_prompt: str | None = None,
        background_negative_prompt: str = "",
        negative_prompts: str | Sequence[str] = "",
        suffix: str | None = None,
        prompt_strengths: float | Sequence[float] = 1.0,
        mask_strengths: float | Sequence[float] = 1.0,
        mask_stds: float | Sequence[float] = 10.0,
    ) -> None:
        """The whole scene in one call (the seed project's): the background, then every layer."""
        self.update_background(background, background_prompt, background_negative_prompt)
        self.update_layers(prompts, negative_prompts, suffix, prompt_strengths, masks, mask_strengths, mask_stds)

    def update(
        self,
        background: Any = None,
        background_prompt: str | None = None,
        background_negative_prompt: str | None = None,
        idx: int | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        suffix: str | None = None,
        prompt_strength: float | None = None,
        mask: Any = None,
        mask_strength: float | None = None,
        mask_std: float | None = None,
    ) -> None:
        """Hold a change of the background and of one layer until `commit()` (or the next frame, which commits):
        the seed project's lazy updates, for front ends that send many small changes. A newer request for the same
        layer replaces the older one's settings it names."""
        self._pending.hold(
            dict(image=background, prompt=background_prompt, negative_prompt=background_negative_prompt),
            dict(idx=idx, prompt=prompt, negative_prompt=negative_prompt, suffix=suffix, prompt_strength=prompt_strength,
                 mask=mask, mask_strength=mask_strength, mask_std=mask_std),
        )

    @property
    def is_dirty(self) -> bool:
        """Changes held by `update` wait for `commit()`."""
        return self._pending.waiting

    def commit(self) -> None:
        """Apply what `update` held, in order: the background first, then the layers."""
        background, layers = self._pending.take()
        if background is not None:
            self.update_background(**background)
        for layer in layers:
            self.update_single_layer(**layer)

    def remove_layer(self, idx: int) -> None:
        n = self.num_layers
        if not 0 <= idx < n:
            raise IndexError(f"layer index {idx} is out of range: there are {n} layers")
        del self._scene.layers[idx]
        self._scene.invalidate()
        self._changed(settles=True)

    # ---- frames -----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, output_type: str = "pil", *, no_decode: bool = False):
        """One frame: a PIL image, or "np" (uint8 HxWx3), "pt" (uint8 HxWx3 on the device), "latent" (1, C, h, w);
        `no_decode=True` (the seed project's) is "latent".

        Changes held by `update` are committed first and the stream settled (`flush`), as in the seed project;
        with `autoflush`, so is any change of prompts, prompt strengths, background or seed."""
        if no_decode:
            output_type = "latent"
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES} (got {output_type!r})")
        if self.is_dirty:
            self.commit()
            self.flush()
        elif self.autoflush and self._flush_due:
            self.flush()
        latent = self._step()
        if output_type == "latent":
            return latent
        return self.decode(latent, output_type)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, output_type: str = "pil"):
        """A frame's latent (1, C, h, w) -> "pil", "np" or "pt" as in `__call__` ("pt" never waits on the device)."""
        if output_type not in OUTPUT_TYPES[:3]:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES[:3]} (got {output_type!r})")
        rgb = to_uint8(self.model.decode(latent))
        if self.profile:
            self._timer.mark("decode")
        return rgb_output(rgb, output_type)

    def inspect_slots(self):
        """What the last frame did at each slot: inputs, clean estimates and each layer's mask weights
        (`inspection.SlotInspection`; `.contact_sheet()` draws them). For learning how the stream works."""
        from .inspection import inspect_slots

        if self._last_slots is None:
            raise RuntimeError("no frame since the pipeline started or its seed changed: run one (pipe() or "
                               "canvas.step()), then inspect it")
        if self._still_frames == 0:
            raise RuntimeError("the layers or the seed changed since the last frame: run a frame, then inspect it")
        return inspect_slots(self, *self._last_slots)

    def _step(self) -> torch.Tensor:
        """Steps 1-5 for all slots; returns the last slot's x0 (1, C, h, w)."""
        scene = self._scene
        batch = scene.batch()
        if self.profile:
            self._timer.start()
        first = self._noise[:1]
        if self.fresh_noise:
            first = torch.randn(first.shape, generator=self._generator, device=self.device, dtype=self.dtype)
        x_t = torch.cat([first, self._buffer])
        # What each slot's latent was made with: bootstrapping and self-guidance's residual start from it. For
        # LCM that is the fixed seeded noise (also Flash); Lightning's Euler slots carry the noise their predecessors implied.
        noise = torch.cat([first, self._carried])
        background = scene.background_latent
        if batch is None:
            x0 = background.expand_as(x_t)
        else:
            timer = self._timer if self.profile else None
            residual = None if self._residual is None else SelfResidual(torch.cat([first, self._residual]))
            x0 = denoise(self.predictor, self.steps, x_t, batch, background, scene.guidance, noise, timer=timer, residual=residual)
            self.unet_calls += 1
        self._carried = self._leaving.carried_noise(x_t[:-1], x0[:-1], self._noise[1:])
        self._buffer = self._renoise.add_noise(x0[:-1], self._carried)
        if self._residual is not None:  # what guidance moved goes on with the latents (StreamDiffusion's stock noise)
            self._residual = self._carried if batch is None else self._renoise.next_residual(self._carried, residual.shift[:-1])
        if self.profile:
            self._timer.mark("blend")
        self._still_frames += 1
        self._last_slots = (x_t, x0, batch)  # references only, for inspect_slots
        return x0[-1:]

