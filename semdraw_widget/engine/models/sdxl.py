"""The SDXL family: two CLIP text encoders, pooled embeddings + time ids, SDXL-Lightning 4-step, TAESDXL.

Text: CLIP-L (`text_encoder`) and OpenCLIP-bigG (`text_encoder_2`, with projection) each give their
penultimate hidden states, concatenated to (N, 77, 2048); bigG's projected pooled embedding (N, 1280)
is the UNet's `text_embeds`. Both travel in the conditioning dict, so every layer has its own and the
core lerps them with the background's like any other tensor. The time ids (original size, crop
top-left, target size) are those of the latents the UNet sees -- the canvas, or a one-shot tile --
and are built once per size.

Sampling: SDXL-Lightning 4-step (`ByteDance/SDXL-Lightning`), its LoRA fused into the base by
default, or its distilled UNet swapped in (`unet_key="lightning"`); Euler with trailing timesteps
999, 749, 499, 249 (`schedulers.EulerTrailingSchedule`); t_index_list (0, 1, 2, 3) takes all four.

Autoencoder: TAESDXL (`madebyollin/taesdxl`) by default. The stock SDXL VAE overflows in float16,
so with `use_tiny_vae=False` it is kept in float32 (its config says `force_upcast`) unless you pass
`vae_key="madebyollin/sdxl-vae-fp16-fix"`, a VAE fixed to run in float16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import loading, regional_attention
from ..schedulers import DEFAULT_SCHEDULER_CONFIG, EulerTrailingSchedule
from .base import Conditioning, LatentFamily
from .lora import fuse_lora_into, read_lora
from .options import LoadOptions
from .sources import Sources

DEFAULT_XL_KEY = "stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING_REPO = "ByteDance/SDXL-Lightning"
DEFAULT_XL_LORA_KEY = f"{LIGHTNING_REPO}/sdxl_lightning_4step_lora.safetensors"
LIGHTNING_UNET_KEY = f"{LIGHTNING_REPO}/sdxl_lightning_4step_unet.safetensors"
DEFAULT_TAESDXL_KEY = "madebyollin/taesdxl"
FP16_FIX_VAE_KEY = "madebyollin/sdxl-vae-fp16-fix"
XL_PARTS = {  # the components read from an SDXL repository (see loading.repo_files)
    "unet": loading.DIFFUSERS_WEIGHTS,
    "text_encoder": loading.TRANSFORMERS_WEIGHTS,
    "text_encoder_2": loading.TRANSFORMERS_WEIGHTS,
    "tokenizer": None,
    "tokenizer_2": None,
    "vae": loading.DIFFUSERS_WEIGHTS,
    "scheduler": None,
}
# what a single-file checkpoint needs from its config repository
XL_CONFIG_FILES = ["model_index.json", *(f"{part}/*" if part.startswith(("tokenizer", "scheduler")) else f"{part}/config.json" for part in XL_PARTS)]


@dataclass
class SDXLComponents:
    tokenizer: Any
    tokenizer_2: Any
    text_encoder: Any
    text_encoder_2: Any
    unet: Any
    vae: Any
    scheduler_config: dict


class SDXL(LatentFamily):
    """Stable Diffusion XL (+ SDXL-Lightning 4-step, + TAESDXL by default)."""

    name = "sdxl"
    default_sources = Sources(DEFAULT_XL_KEY, DEFAULT_XL_LORA_KEY, DEFAULT_TAESDXL_KEY, LIGHTNING_UNET_KEY)
    latent_channels = 4
    vae_scale = 8
    default_tile_size = 1024
    default_size = 1024
    stream_cover_alpha = 0.1  # as the seed project's SDXL stream
    default_t_index_list = (0, 1, 2, 3)

    def __init__(self, components: SDXLComponents, device: torch.device, dtype: torch.dtype):
        super().__init__(components.vae, device, dtype)
        self.tokenizers = (components.tokenizer, components.tokenizer_2)
        self.text_encoders = (components.text_encoder, components.text_encoder_2)
        self.unet = components.unet
        self.schedule = EulerTrailingSchedule(components.scheduler_config)
        self._time_ids: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def _load(cls, sources: Sources, options: LoadOptions, device: torch.device, dtype: torch.dtype) -> "SDXL":
        """SDXL from a hub id, diffusers folder or single file (`config` names where a single file's configs come
        from). `lora_key=True` fuses the Lightning 4-step LoRA; `unet_key="lightning"` (or a .safetensors UNet)
        swaps in a distilled UNet instead, and then no LoRA is fused unless named."""
        hf_key = sources.hf_key
        unet_key = sources.distilled_unet if options.unet_key == "lightning" else options.unet_key
        lora_key = None if unet_key and options.lora_key is True else sources.lora(options.lora_key)
        use_tiny_vae, vae_key = options.use_tiny_vae, options.vae_key
        parts = _load_components(
            hf_key, options.config, options.allow_pickle, need_vae=not use_tiny_vae and not vae_key, need_unet=not unet_key, dtype=dtype,
        )
        if unet_key:
            parts.unet = _swap_unet(parts.unet, hf_key, unet_key, dtype)
        if use_tiny_vae:
            parts.vae = loading.load_taesd(sources.taesd(options.taesd_key))
        elif vae_key:
            from diffusers import AutoencoderKL

            parts.vae = _load_vae(AutoencoderKL, vae_key, dtype)
        if lora_key:
            from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

            state = read_lora(str(lora_key), "sdxl", DEFAULT_XL_LORA_KEY, options.allow_pickle)
            shell = StableDiffusionXLPipeline(
                vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
                tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=parts.unet,
                scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config),
            )
            fuse_lora_into(shell, state, str(lora_key), options.lora_weight)
        loading.to_device([parts.text_encoder, parts.text_encoder_2, parts.unet], device, dtype, "SDXL")
        overflows = dtype == torch.float16 and getattr(parts.vae.config, "force_upcast", False)
        loading.to_device([parts.vae], device, torch.float32 if overflows else dtype, "SDXL")
        return cls(parts, device, dtype)

    # ---- text -------------------------------------------------------------------------------
    def encode_prompts(self, texts: Sequence[str]) -> Conditioning:
        """{"encoder_hidden_states": (N, 77, D_L + D_G), "text_embeds": (N, P)}; cached per text."""
        return self.cached_conditioning(texts, self._encode)

    def _encode(self, texts: list[str]) -> Conditioning:
        hidden, pooled = self.clip_pair_outputs(texts)
        # text_embeds: bigG's projected pooled embedding (CLIP-L's first output is its last hidden state)
        return {"encoder_hidden_states": torch.cat(hidden, dim=-1).to(self.dtype), "text_embeds": pooled[1].to(self.dtype)}

    # ---- denoiser ---------------------------------------------------------------------------
    def time_ids(self, batch: int, height: int, width: int) -> torch.Tensor:
        """(batch, 6): original size, crop top-left (0, 0), target size, all the image size in pixels."""
        key = (height, width)  # not the batch size: torch.compile treats it as dynamic and may not branch on it
        if key not in self._time_ids:
            self._time_ids[key] = torch.tensor([height, width, 0, 0, height, width], dtype=self.dtype, device=self.device)
        return self._time_ids[key].expand(batch, 6)

    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The UNet's noise prediction eps for (B, 4, h, w) latents, (B,) timesteps and per-item conditioning."""
        b, _, h, w = latents.shape
        added = {"text_embeds": cond["text_embeds"], "time_ids": self.time_ids(b, h * self.vae_scale, w * self.vae_scale)}
        return self.unet(
            latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"], added_cond_kwargs=added, return_dict=False,
            **regional_attention.model_kwargs(cond),
        )[0]


def _load_components(hf_key: str, config: str | None, allow_pickle: bool, need_vae: bool, need_unet: bool, dtype) -> SDXLComponents:
    """The components of a folder, hub id or single file, in `dtype`. Without `need_unet` (a UNet file replaces
    it) a folder's or hub id's UNet is left out (None): its weights are neither downloaded nor held."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = Path(os.path.expanduser(hf_key))
    loading.check_pickle(path, allow_pickle)
    if path.is_file():
        return _load_single_file(path, config or DEFAULT_XL_KEY, dtype)
    if loading.is_local(hf_key) and not path.is_dir():
        raise loading.ModelNotFoundError(
            f"{hf_key!r} does not exist: expected an SDXL diffusers folder (with {', '.join(XL_PARTS)}/) or a "
            "single .safetensors file. Check the path, pass a hub id, or use hf_key='tiny-xl' for the offline miniature."
        )
    parts = {**XL_PARTS, "unet": XL_PARTS["unet"] if need_unet else loading.CONFIG_ONLY}
    if not need_vae:
        del parts["vae"]
    files = loading.repo_files(parts, dtype)
    defaults = {**DEFAULT_SCHEDULER_CONFIG, "prediction_type": "epsilon"}
    return SDXLComponents(
        tokenizer=loading.load_part(CLIPTokenizer, hf_key, "tokenizer", files),
        tokenizer_2=loading.load_part(CLIPTokenizer, hf_key, "tokenizer_2", files),
        text_encoder=loading.load_part(CLIPTextModel, hf_key, "text_encoder", files, dtype=dtype),
        text_encoder_2=loading.load_part(CLIPTextModelWithProjection, hf_key, "text_encoder_2", files, dtype=dtype),
        unet=loading.load_part(UNet2DConditionModel, hf_key, "unet", files, dtype=dtype) if need_unet else None,
        vae=loading.load_part(AutoencoderKL, hf_key, "vae", files, dtype=dtype) if need_vae else None,
        scheduler_config=loading.read_scheduler_config(hf_key, defaults, files),
    )


def _swap_unet(unet, hf_key: str, unet_key: str, dtype):
    """The UNet of `unet_key`'s file (e.g. SDXL-Lightning's distilled UNet), with `hf_key`'s UNet config. A folder's
    or hub id's UNet was not loaded (None): it is built empty from its config and takes the file's tensors as they are."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    unet_file = loading.local_file(unet_key, "diffusion_pytorch_model.safetensors", "UNet", option="unet_key")
    state = loading.load_safetensors(unet_file, "UNet")
    if unet is None:
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(_unet_config(hf_key))
    try:
        unet.load_state_dict(state, assign=True)
    except RuntimeError as error:
        raise ValueError(
            f"UNet file {str(unet_file)!r} (unet_key) does not fit the SDXL UNet of {hf_key!r}: "
            f"{str(error).splitlines()[0]} Pass a full SDXL UNet file (e.g. unet_key='lightning')."
        ) from error
    return unet


def _unet_config(hf_key: str) -> dict:
    from diffusers import UNet2DConditionModel

    folder = Path(os.path.expanduser(hf_key))
    if folder.is_dir():
        return UNet2DConditionModel.load_config(folder / "unet")
    files = loading.repo_files({"unet": loading.CONFIG_ONLY})
    return loading.hub_call(lambda **kw: UNet2DConditionModel.load_config(hf_key, subfolder="unet", **kw), hf_key, files, "Model")


def _load_single_file(file: Path, config: str, dtype) -> SDXLComponents:
    """An original-layout (SGM) SDXL checkpoint through diffusers' single-file loader, which also converts
    the OpenCLIP-bigG text encoder; `config` (a folder or hub id) supplies configs and tokenizers."""
    from diffusers import StableDiffusionXLPipeline

    local = Path(os.path.expanduser(config)).is_dir()

    def load(**kw):
        return StableDiffusionXLPipeline.from_single_file(str(file), config=config, torch_dtype=dtype, **kw)

    pipe = load(local_files_only=True) if local else loading.hub_call(load, config, XL_CONFIG_FILES, "Config repository", option="config")
    scheduler_config = {**DEFAULT_SCHEDULER_CONFIG, **dict(pipe.scheduler.config)}
    return SDXLComponents(
        pipe.tokenizer, pipe.tokenizer_2, pipe.text_encoder, pipe.text_encoder_2, pipe.unet, pipe.vae, scheduler_config
    )


def _load_vae(cls, key: str, dtype):
    """A VAE (`vae_key`) from a folder or hub id, in `dtype`."""
    path = Path(os.path.expanduser(key))
    if path.is_file():
        raise ValueError(
            f"vae_key {key!r} is a single file; a VAE is read from a diffusers folder (config.json and weights) or a hub id, "
            "e.g. 'madebyollin/sdxl-vae-fp16-fix'"
        )
    if loading.is_local(key) and not path.is_dir():
        raise loading.ModelNotFoundError(
            f"VAE folder {key!r} (given as vae_key) does not exist: expected a folder with config.json and weights, or a hub id"
        )
    files = loading.repo_files({"": loading.DIFFUSERS_WEIGHTS}, dtype, pipeline=False)
    return loading.load_part(cls, key, "", files, "VAE", dtype=dtype, option="vae_key")
