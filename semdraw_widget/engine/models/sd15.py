"""The SD 1.5 family: CLIP text encoding, the UNet's noise prediction, TAESD / KL autoencoders, LCM steps.

A family adapter is all the region core knows about a model (see `models/__init__.py` for the
interface). Conditioning travels as a dict of batch-first tensors so families with more inputs
(SDXL's pooled embeddings and time ids) fit the same core: the core only lerps, repeats and
concatenates those tensors along dim 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..loading import DEFAULT_HF_KEY, DEFAULT_LORA_KEY, DEFAULT_TAESD_KEY, load_sd15
from ..schedulers import LCMSchedule
from .base import Conditioning, LatentFamily, clip_token_ids


class SD15(LatentFamily):
    """Stable Diffusion 1.5 (+ LCM-LoRA fused, + TAESD by default)."""

    name = "sd15"
    latent_channels = 4
    vae_scale = 8
    default_tile_size = 768
    default_size = 512  # the canvas side the model was trained at
    default_cover_alpha = 0.3
    default_t_index_list = (0, 4, 12, 25, 37)

    def __init__(self, components: Any, device: torch.device, dtype: torch.dtype):
        super().__init__(components.vae, device, dtype)
        self.tokenizer = components.tokenizer
        self.text_encoder = components.text_encoder
        self.unet = components.unet
        self.schedule = LCMSchedule(components.scheduler_config)
        self.notice = components.notice

    @classmethod
    def load(
        cls,
        hf_key: str | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        lora_key: str | bool | None = True,
        use_tiny_vae: bool = True,
        taesd_key: str | None = None,
        config: str | None = None,
        allow_pickle: bool = False,
    ) -> "SD15":
        """`lora_key=True` fuses LCM-LoRA (`latent-consistency/lcm-lora-sdv1-5`); None/False loads no LoRA."""
        from ..loading import default_dtype, resolve_device

        device = resolve_device(device)
        dtype = dtype or default_dtype(device)
        components = load_sd15(
            hf_key or DEFAULT_HF_KEY, device=device, dtype=dtype,
            lora_key=DEFAULT_LORA_KEY if lora_key is True else lora_key, use_tiny_vae=use_tiny_vae,
            taesd_key=taesd_key or DEFAULT_TAESD_KEY, config=config, allow_pickle=allow_pickle,
        )
        return cls(components, device, dtype)

    # ---- text -------------------------------------------------------------------------------
    def encode_prompts(self, texts: Sequence[str]) -> Conditioning:
        """{"encoder_hidden_states": (N, 77, D)}; cached per text. Overlong prompts are cut with a warning."""
        return self.cached_conditioning(texts, self._encode)

    def _encode(self, texts: list[str]) -> Conditioning:
        ids = torch.cat([clip_token_ids(self.tokenizer, t) for t in texts]).to(self.device)
        return {"encoder_hidden_states": self.text_encoder(ids)[0].to(self.dtype)}

    # ---- denoiser ---------------------------------------------------------------------------
    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The UNet's noise prediction eps for (B, 4, h, w) latents, (B,) timesteps and per-item conditioning."""
        return self.unet(latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"], return_dict=False)[0]
