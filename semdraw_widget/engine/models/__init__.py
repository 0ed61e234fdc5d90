"""Model families. A family adapter supplies everything model-specific to the shared region core:

    name, latent_channels, vae_scale, default_tile_size, default_cover_alpha
    schedule                  -> object with prepare(t_index_list, device, dtype) -> SlotSteps
                                 (schedulers.py: timesteps, noise levels, x0(), add_noise())
    encode_prompts(texts)     -> conditioning dict of batch-first tensors, cached per text
    predict(x, timesteps, cond) -> the model output that schedule's SlotSteps.x0 expects
    encode(images in [0, 1])  -> latents;  decode(latents) -> images in [0, 1]
    device, dtype

SDXL and SD3 are added as new modules here plus a schedule class in schedulers.py; stream.py,
oneshot.py and blend.py stay as they are.
"""

from __future__ import annotations

from typing import Any

from .sd15 import SD15

FAMILIES = {"sd15": SD15}


def load_model(hf_key: str = "stable-diffusion-v1-5/stable-diffusion-v1-5", device: Any = "cpu", family: str = "sd15", **kwargs: Any):
    """Load the family adapter for `hf_key` (hub id, folder, .safetensors file, or "tiny")."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; available: {', '.join(FAMILIES)}")
    return FAMILIES[family].load(hf_key, device=device, **kwargs)
