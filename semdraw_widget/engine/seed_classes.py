"""The seed project's per-family class names, each the pipeline here fixed to one family with the seed's
defaults for it.

The seed has one class per family and pipeline; here `StreamMultiDiffusion` and `StableMultiDiffusionPipeline`
run every family (`sd_version`, or detected from the checkpoint), so its SDXL and SD3 classes are those two
with the family fixed and the seed's SDXL / SD3 defaults: five slots, 0, 4, 12, 25, 37, of a 50-step schedule
(where our own default is the 4 steps the Lightning and Flash models were distilled for), streams 512 x 512,
and guidance rescale 0.7 for the one-shot pipelines. Kolors is not supported, and its class says so.
"""

from __future__ import annotations

from typing import Any

import torch

from .models.base import LatentFamily
from .models.detection import FAMILY_TITLES, family_name
from .oneshot import StableMultiDiffusionPipeline
from .stream import StreamMultiDiffusion

SEED_SLOTS = (0, 4, 12, 25, 37)  # the seed's t_index_list for every family...
SEED_SCHEDULE_STEPS = 50  # ...indexing a schedule of this many steps


def _family_version(cls: type, family: str, sd_version: str | None, model: Any) -> str:
    """The sd_version a per-family class loads: its own; another one asked for, or a loaded model of another
    family, is refused."""
    title = FAMILY_TITLES[family]
    if sd_version is not None and family_name(sd_version) != family:
        raise ValueError(f"{cls.__name__} runs {title} models (got sd_version={sd_version!r}); leave sd_version out, "
                         f"or use StreamMultiDiffusion / StableMultiDiffusionPipeline with sd_version={sd_version!r}")
    if isinstance(model, LatentFamily) and model.name != family:
        raise ValueError(f"{cls.__name__} runs {title} models, but the model given is {FAMILY_TITLES[model.name]}: "
                         "use StreamMultiDiffusion / StableMultiDiffusionPipeline, which run every family")
    return family


class _SeedStream(StreamMultiDiffusion):
    family: str
    seed_defaults: dict[str, Any] = {}

    def __init__(self, model_or_device: Any = None, /, dtype: torch.dtype | None = None, *, sd_version: str | None = None,
                 **kwargs: Any):
        given_model = kwargs.get("model", model_or_device)
        if isinstance(given_model, LatentFamily):  # a loaded model fixes the family: no sd_version to pass on
            _family_version(type(self), self.family, sd_version, given_model)
        else:
            sd_version = _family_version(type(self), self.family, sd_version, None)
        defaults = dict(t_index_list=SEED_SLOTS, num_inference_steps=SEED_SCHEDULE_STEPS, height=512, width=512,
                        **self.seed_defaults)
        super().__init__(model_or_device, dtype, sd_version=sd_version, **{**defaults, **kwargs})


class StreamMultiDiffusionSDXL(_SeedStream):
    """The seed project's SDXL stream: `StreamMultiDiffusion` on SDXL (SDXL-Lightning 4-step LoRA + TAESDXL by
    default), with the seed's defaults: t_index_list 0, 4, 12, 25, 37 of a 50-step Euler schedule
    (`num_inference_steps`), 512 x 512, cover decay 0.1."""

    family = "sdxl"


class StreamMultiDiffusion3(_SeedStream):
    """The seed project's SD3 stream: `StreamMultiDiffusion` on SD3 (Flash-SD3 + TAESD3 by default), with the
    seed's defaults: t_index_list 0, 4, 12, 25, 37 of a 50-step flow-matching schedule (`num_inference_steps`),
    512 x 512, cover decay 0.1, guidance_scale 0."""

    family = "sd3"
    seed_defaults = {"guidance_scale": 0.0}


class _SeedOneShot(StableMultiDiffusionPipeline):
    family: str
    schedule_steps = SEED_SCHEDULE_STEPS
    default_guidance_rescale = 0.7

    def __init__(self, model_or_device: Any = None, /, dtype: torch.dtype | None = None, *, sd_version: str | None = None,
                 **kwargs: Any):
        given_model = kwargs.get("model", model_or_device)
        if isinstance(given_model, LatentFamily):
            _family_version(type(self), self.family, sd_version, given_model)
        else:
            sd_version = _family_version(type(self), self.family, sd_version, None)
        kwargs.setdefault("t_index_list", SEED_SLOTS)
        super().__init__(model_or_device, dtype, sd_version=sd_version, **kwargs)


class StableMultiDiffusionSDXLPipeline(_SeedOneShot):
    """The seed project's SDXL one-shot pipeline: `StableMultiDiffusionPipeline` on SDXL (SDXL-Lightning 4-step
    LoRA by default, the full VAE), with the seed's defaults: t_index_list 0, 4, 12, 25, 37 of a 50-step Euler
    schedule, guidance_rescale 0.7, images 1024 x 1024."""

    family = "sdxl"


class StableMultiDiffusion3Pipeline(_SeedOneShot):
    """The seed project's SD3 one-shot pipeline: `StableMultiDiffusionPipeline` on SD3 (Flash-SD3 by default, the
    full VAE), with the seed's defaults: t_index_list 0, 4, 12, 25, 37 of a 50-step flow-matching schedule,
    guidance_rescale 0.7, images 1024 x 1024."""

    family = "sd3"


class StableMultiDiffusionKolorsPipeline:
    """The seed project's Kolors pipeline, which is not supported here: constructing it says what it would need."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "StableMultiDiffusionKolorsPipeline is not supported by semdraw_widget. Kolors would need a family adapter "
            "of its own: its ChatGLM3 text encoder (Kwai-Kolors/Kolors, loaded with trust_remote_code, which runs code "
            "from the hub), its 256-token prompts and time ids in the SDXL UNet, and a few-step sampler distilled for it "
            "(the seed runs 50 steps of Euler with guidance 5). For SDXL-class images use StableMultiDiffusionSDXLPipeline."
        )
