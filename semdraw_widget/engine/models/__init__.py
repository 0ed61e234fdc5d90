"""Model families. A family adapter supplies everything model-specific to the shared region core:

    name, latent_channels, vae_scale, default_tile_size, default_cover_alpha, default_t_index_list
    schedule                  -> object with prepare(t_index_list, device, dtype) -> SlotSteps and
                                 default_indices(num_inference_steps=None)
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

All three use cover alpha 0.3. stream.py, oneshot.py and blend.py know none of this.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..loading import FAMILY_TITLES, TINY_KEYS, detect_family, family_name
from .sd3 import SD3
from .sd15 import SD15
from .sdxl import SDXL

FAMILIES = {"sd15": SD15, "sdxl": SDXL, "sd3": SD3}
# Loading options only one family has (the pipelines take them as keywords, None meaning "not given").
FAMILY_OPTIONS = {"unet_key": "sdxl", "vae_key": "sdxl", "use_t5": "sd3"}
# The pipelines' loading options and their defaults: with model= (loaded already) anything else would be ignored.
LOADING_DEFAULTS = {"lora_key": True, "use_tiny_vae": True, "taesd_key": None, "config": None, "allow_pickle": False,
                    **{option: None for option in FAMILY_OPTIONS}}
log = logging.getLogger("semdraw_widget")
TINY_FOR = {family: key for key, family in TINY_KEYS.items()}


def load_model(hf_key: str | None = None, device: Any = "cpu", family: str | None = None, **kwargs: Any):
    """Load the family adapter for `hf_key` (hub id, folder, .safetensors file, "tiny", "tiny-xl" or "tiny-3").

    `family` ("1.5" / "xl" / "3", or "sd15" / "sdxl" / "sd3") is detected from the checkpoint when not
    given (SD 1.5 when `hf_key` is None too); `hf_key=None` loads the model named by the environment
    variable SEMDRAW_MODEL when it is set (CI sets "tiny"), else the family's default hub model.
    Family-specific options pass through: SDXL `unet_key`, `vae_key`; SD3 `use_t5`.
    """
    if hf_key is None and os.environ.get("SEMDRAW_MODEL"):
        hf_key = os.environ["SEMDRAW_MODEL"]
        log.info("loading %s (from SEMDRAW_MODEL)", hf_key)
    if family is None:
        name = detect_family(hf_key) if hf_key is not None else "sd15"
    else:
        name = family_name(family)
        if hf_key in TINY_KEYS:  # "tiny" with a family is that family's miniature
            if hf_key != "tiny" and TINY_KEYS[hf_key] != name:
                raise ValueError(f"hf_key={hf_key!r} is the {TINY_KEYS[hf_key]} miniature, but sd_version={family!r} asks for {name}")
            hf_key = TINY_FOR[name]
    for option, owner in FAMILY_OPTIONS.items():
        if kwargs.get(option) is None:
            kwargs.pop(option, None)
        elif owner != name:
            raise ValueError(
                f"{option} is an option of {FAMILY_TITLES[owner]} models, but {repr(hf_key) if hf_key else 'the default model'} is "
                f"{FAMILY_TITLES[name]}: leave {option} out, or load an {FAMILY_TITLES[owner]} model (sd_version=...)"
            )
    return FAMILIES[name].load(hf_key, device=device, **kwargs)


def pipeline_model(device: Any, dtype: Any, model: Any, hf_key: str | None, sd_version: str | None, **kwargs: Any):
    """(device, dtype, family adapter) for a pipeline: a given `model` is shared as it is (its dtype wins
    unless one is asked for); otherwise one is loaded for `hf_key` with `kwargs` (lora_key, taesd_key, ...)."""
    from ..loading import default_dtype, resolve_device

    if model is not None:  # options that choose what to load would be ignored
        given = [option for option, default in LOADING_DEFAULTS.items() if option in kwargs and kwargs[option] != default]
        given += ["hf_key"] if hf_key is not None else []
        if sd_version is not None and family_name(sd_version) != model.name:
            given.append(f"sd_version={sd_version!r} (the model is {FAMILY_TITLES[model.name]})")
        if given:
            raise ValueError(
                f"model= is loaded already, so these loading options would be ignored: {', '.join(given)}. Pass them "
                "to load_model(...) instead, or leave model out"
            )
    device = resolve_device(device)
    dtype = dtype or (model.dtype if model is not None else default_dtype(device))
    return device, dtype, model or load_model(hf_key, device=device, dtype=dtype, family=sd_version, **kwargs)
