"""Model families. A family adapter supplies everything model-specific to the shared region core:

    name, latent_channels, vae_scale, default_tile_size, stream_cover_alpha, default_t_index_list
    schedule                  -> object with prepare(t_index_list, device, dtype) -> SlotSteps (t_index_list
                                 indexes its num_steps steps) and with_steps(n) (the same sampler in n steps)
                                 (schedulers.py: timesteps, noise levels, x0(), add_noise())
    encode_prompts(texts)     -> conditioning dict of batch-first tensors, cached per text
    predict(x, timesteps, cond) -> the model output that schedule's SlotSteps.x0 expects
    encode(images in [0, 1])  -> latents;  decode(latents) -> images in [0, 1]
    device, dtype

| sd_version | family | denoiser, sampler                     | default LoRA / autoencoder            | tile | t_index_list        |
|------------|--------|---------------------------------------|---------------------------------------|------|---------------------|
| "1.5"      | sd15   | UNet, LCM (eps)                       | LCM-LoRA / TAESD                      | 768  | (0, 4, 12, 25, 37)  |
| "xl"       | sdxl   | UNet + pooled/time ids, Euler trailing | SDXL-Lightning 4-step LoRA / TAESDXL | 1024 | (0, 1, 2, 3)        |
| "3"        | sd3    | MMDiT, flow matching (velocity), Flash | Flash-SD3 (PEFT) / TAESD3, no T5     | 1024 | (0, 1, 2, 3)        |

Streams decay covered masks by `stream_cover_alpha`: 0.3 for SD 1.5, 0.1 for SDXL and SD3, as the seed project's
streams do (its one-shot pipelines use 0.3 for all three). stream.py, oneshot.py and blend.py know none of this.

Loading: `load_model(hf_key, device, family, dtype, **options)` detects the family (`detection.py`), checks
the options once (`options.LoadOptions`) and hands them to the family's `load`, which reads its parts
(each family's module), fuses its LoRA (`lora.py`) and picks its autoencoder; a built-in key such as
"tiny" brings its own defaults (`sources.py`). Which model a notebook gets by default is `choice.py`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from .choice import configured_model
from .detection import detect_family, family_name
from .options import LoadOptions
from .sd3 import SD3
from .sd15 import SD15
from .sdxl import SDXL
from .sources import BUILTIN_MODELS, builtin_of_family

FAMILIES = {"sd15": SD15, "sdxl": SDXL, "sd3": SD3}
log = logging.getLogger("semdraw_widget")


def load_model(hf_key: str | None = None, device: Any = "cpu", family: str | None = None, dtype: torch.dtype | None = None,
               **options: Any):
    """Load the family adapter for `hf_key`: a hub id, a diffusers folder, a .safetensors file, or a built-in key
    ("tiny", "tiny-xl", "tiny-3": random-weight miniatures).

    `family` ("1.5" / "xl" / "3", or "sd15" / "sdxl" / "sd3") is detected from the checkpoint when not
    given (SD 1.5 when `hf_key` is None too); `hf_key=None` loads the model named by the environment
    variable SEMDRAW_MODEL when it is set (CI sets "tiny"), else the family's default hub model.
    `options` are those of `LoadOptions` (lora_key, use_tiny_vae, taesd_key, config, allow_pickle; SDXL
    unet_key, vae_key; SD3 use_t5). `dtype` is float16 on CUDA and float32 elsewhere unless given.
    """
    return load_with_options(hf_key, device, dtype, family, LoadOptions.from_keywords(options, "load_model"))


def load_with_options(hf_key: str | None, device: Any, dtype: torch.dtype | None, family: str | None, options: LoadOptions):
    """`load_model` with its options checked already (the pipelines' seed form checks them as its own keywords)."""
    if hf_key is None:
        hf_key = configured_model()
        if hf_key is not None:
            log.info("loading %s (from SEMDRAW_MODEL)", hf_key)
    hf_key = None if hf_key is None else os.fspath(hf_key)
    if family is None:
        name = detect_family(hf_key) if hf_key is not None else "sd15"
    else:
        name = family_name(family)
        if hf_key in BUILTIN_MODELS:
            hf_key = builtin_of_family(hf_key, name, family)
    return FAMILIES[name].load(hf_key, device, dtype, options)
