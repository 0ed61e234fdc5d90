"""The SD 1.5 family: CLIP text encoding, the UNet's noise prediction, TAESD / KL autoencoders, LCM steps.

A family adapter is all the region core knows about a model (see `models/__init__.py` for the
interface). Conditioning travels as a dict of batch-first tensors so families with more inputs
(SDXL's pooled embeddings and time ids) fit the same core: the core only lerps, repeats and
concatenates those tensors along dim 0.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Sequence

import torch

from ..loading import DEFAULT_HF_KEY, DEFAULT_LORA_KEY, DEFAULT_TAESD_KEY, load_sd15
from ..schedulers import LCMSchedule

Conditioning = dict[str, torch.Tensor]


class SD15:
    """Stable Diffusion 1.5 (+ LCM-LoRA fused, + TAESD by default)."""

    name = "sd15"
    latent_channels = 4
    vae_scale = 8
    default_tile_size = 768
    default_cover_alpha = 0.3
    embedding_cache_size = 256

    def __init__(self, components: Any, device: torch.device, dtype: torch.dtype):
        self.tokenizer = components.tokenizer
        self.text_encoder = components.text_encoder
        self.unet = components.unet
        self.vae = components.vae
        self.device, self.dtype = device, dtype
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.schedule = LCMSchedule(components.scheduler_config)
        self.max_tokens = int(self.tokenizer.model_max_length)
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def load(
        cls,
        hf_key: str = DEFAULT_HF_KEY,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        lora_key: str | bool | None = DEFAULT_LORA_KEY,
        use_tiny_vae: bool = True,
        taesd_key: str = DEFAULT_TAESD_KEY,
        config: str | None = None,
        allow_pickle: bool = False,
    ) -> "SD15":
        from ..loading import default_dtype, resolve_device

        device = resolve_device(device)
        dtype = dtype or default_dtype(device)
        components = load_sd15(
            hf_key, device=device, dtype=dtype, lora_key=lora_key, use_tiny_vae=use_tiny_vae,
            taesd_key=taesd_key, config=config, allow_pickle=allow_pickle,
        )
        return cls(components, device, dtype)

    # ---- text -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, texts: Sequence[str]) -> Conditioning:
        """{"encoder_hidden_states": (N, 77, D)}; cached per text. Overlong prompts are cut with a warning."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if missing:
            ids = torch.cat([self._token_ids(t) for t in missing]).to(self.device)
            hidden = self.text_encoder(ids)[0].to(self.dtype)
            for text, row in zip(missing, hidden):
                self._embeddings[text] = row[None]
        for text in texts:
            self._embeddings.move_to_end(text)
        while len(self._embeddings) > self.embedding_cache_size:
            self._embeddings.popitem(last=False)
        return {"encoder_hidden_states": torch.cat([self._embeddings[t] for t in texts])}

    def _token_ids(self, text: str) -> torch.Tensor:
        full = self.tokenizer(text, truncation=False, add_special_tokens=True).input_ids
        if len(full) > self.max_tokens:
            dropped = len(full) - self.max_tokens
            warnings.warn(
                f"prompt {text[:40]!r}... is {len(full)} tokens long, but the text encoder reads at most "
                f"{self.max_tokens}: the last {dropped} token(s) were dropped. Shorten the prompt to keep them.",
                stacklevel=4,
            )
        return self.tokenizer(
            text, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt"
        ).input_ids

    # ---- denoiser ---------------------------------------------------------------------------
    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The UNet's noise prediction eps for (B, 4, h, w) latents, (B,) timesteps and per-item conditioning."""
        return self.unet(latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"], return_dict=False)[0]

    # ---- autoencoder ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> scaled latents (B, 4, H/8, W/8) (the distribution's mode for the KL VAE)."""
        out = self.vae.encode(images.to(self.device, self.dtype) * 2.0 - 1.0)
        latents = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
        return latents * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (B, 3, H, W) RGB in [0, 1]."""
        images = self.vae.decode(latents / self.scaling_factor, return_dict=False)[0]
        return (images * 0.5 + 0.5).clamp(0.0, 1.0)
