"""The SD 1.5 family: CLIP text encoding, the UNet's noise prediction, TAESD / KL autoencoders, LCM steps,
and how its parts are read.

A family adapter is all the region core knows about a model (see `models/__init__.py` for the
interface). Conditioning travels as a dict of batch-first tensors so families with more inputs
(SDXL's pooled embeddings and time ids) fit the same core: the core only lerps, repeats and
concatenates those tensors along dim 0.

Loading: a diffusers folder or hub id (unet/, text_encoder/, tokenizer/, vae/, scheduler/; vae/ may hold
an AutoencoderKL or an AutoencoderTiny, whichever its config names), or one original-layout (LDM) file
converted by diffusers' single-file loader with the configs of `config`. LCM-LoRA is fused by default and
TAESD decodes. The seed project's default hub id, `runwayml/stable-diffusion-v1-5`, was removed from the hub:
it is read from its maintained copy, and the model's `notice` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import loading, regional_attention
from ..schedulers import DEFAULT_SCHEDULER_CONFIG, LCMSchedule
from .base import Conditioning, LatentFamily, clip_token_ids
from .lora import fuse_lora_into, read_lora
from .options import LoadOptions
from .sources import Sources

log = logging.getLogger("semdraw_widget")
DEFAULT_HF_KEY = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_LORA_KEY = "latent-consistency/lcm-lora-sdv1-5"
DEFAULT_TAESD_KEY = "madebyollin/taesd"
SD15_PARTS = {  # the components read from an SD 1.5 repository (see loading.repo_files)
    "unet": loading.DIFFUSERS_WEIGHTS,
    "text_encoder": loading.TRANSFORMERS_WEIGHTS,
    "tokenizer": None,
    "vae": loading.DIFFUSERS_WEIGHTS,
    "scheduler": None,
}
AUTOENCODERS = ("AutoencoderKL", "AutoencoderTiny")  # what vae/ may hold (the class its config names)
# Removed from the hub (runwayml deleted its repositories in 2024); a maintained copy holds the same files.
REMOVED_REPOS = {"runwayml/stable-diffusion-v1-5": DEFAULT_HF_KEY}


@dataclass
class SD15Components:
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: dict
    notice: str = ""  # something the user should know about what was loaded (shown by the widget)


class SD15(LatentFamily):
    """Stable Diffusion 1.5 (+ LCM-LoRA fused, + TAESD by default)."""

    name = "sd15"
    default_sources = Sources(DEFAULT_HF_KEY, DEFAULT_LORA_KEY, DEFAULT_TAESD_KEY)
    latent_channels = 4
    vae_scale = 8
    default_tile_size = 768
    default_size = 512  # the canvas side the model was trained at
    stream_cover_alpha = 0.3  # the seed project's streams: 0.3 for SD 1.5
    default_t_index_list = (0, 4, 12, 25, 37)

    def __init__(self, components: SD15Components, device: torch.device, dtype: torch.dtype):
        super().__init__(components.vae, device, dtype)
        self.tokenizer = components.tokenizer
        self.text_encoder = components.text_encoder
        self.unet = components.unet
        self.schedule = LCMSchedule(components.scheduler_config)
        self.notice = components.notice
        # A v-predicting model's output becomes eps here, so everything downstream reads eps:
        # eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, with both factors looked up on the device per item.
        self._v_factors = None
        if self.schedule.prediction_type == "v_prediction":
            abar = self.schedule.alphas_cumprod
            self._v_factors = torch.stack([abar.sqrt(), (1.0 - abar).sqrt()]).to(device=device, dtype=dtype)

    @classmethod
    def _load(cls, sources: Sources, options: LoadOptions, device: torch.device, dtype: torch.dtype) -> "SD15":
        """The components of `sources.hf_key` in `dtype`, the LoRA fused (LCM-LoRA by default), the autoencoder picked."""
        hf_key, notice = replace_removed_repo(sources.hf_key)
        config = replace_removed_repo(options.config)[0] if options.config else None
        use_tiny_vae = options.use_tiny_vae
        path = Path(os.path.expanduser(hf_key))
        loading.check_pickle(path, options.allow_pickle)
        if path.is_file() and path.suffix in loading.SINGLE_FILE_SUFFIXES:
            parts = _load_single_file(path, config or DEFAULT_HF_KEY, use_tiny_vae, dtype)
        elif path.is_dir():
            parts = _load_folder(path, use_tiny_vae, dtype)
        elif loading.is_local(hf_key):
            raise loading.ModelNotFoundError(
                f"{hf_key!r} does not exist: expected a diffusers folder (with {', '.join(SD15_PARTS)}/) or a "
                "single .safetensors file. Check the path, pass a hub id, or set SEMDRAW_MODEL=tiny for the offline miniature."
            )
        else:
            parts = _load_parts(hf_key, use_tiny_vae, dtype)
        if use_tiny_vae:
            parts.vae = loading.load_taesd(sources.taesd(options.taesd_key))
        lora_key = sources.lora(options.lora_key)
        if lora_key:
            prediction = parts.scheduler_config.get("prediction_type", "epsilon")
            if prediction != "epsilon":  # e.g. an SD 2.x-v checkpoint
                raise ValueError(
                    f"{hf_key!r} predicts v ({prediction}), as SD 2.x-v models do, but the LCM-LoRA {str(lora_key)!r} is "
                    "distilled for epsilon-prediction SD 1.5 models, so their images would be wrong. Pass an SD 1.5 "
                    "checkpoint, or lora_key=None for a model that samples in a few steps without it (e.g. hf_key='demo')."
                )
            _fuse_lora(str(lora_key), parts, options.allow_pickle, options.lora_weight)
        loading.to_device([parts.text_encoder, parts.unet, parts.vae], device, dtype, "SD 1.5")
        parts.notice = notice
        return cls(parts, device, dtype)

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
        out = self.unet(latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"], return_dict=False,
                        **regional_attention.model_kwargs(cond))[0]
        if self._v_factors is None:
            return out
        alpha, sigma = self._v_factors[:, timesteps].view(2, -1, 1, 1, 1)
        return alpha * out + sigma * latents


def replace_removed_repo(hf_key: str) -> tuple[str, str]:
    """(the hub id to load, a notice or ""): a repository removed from the hub is read from its maintained copy,
    unless it is a local folder or still in this machine's hub cache."""
    new = REMOVED_REPOS.get(hf_key)
    if new is None or os.path.exists(os.path.expanduser(hf_key)) or _in_cache(hf_key):
        return hf_key, ""
    notice = f"{hf_key!r} was removed from the Hugging Face hub in 2024; loading its maintained copy {new!r} instead."
    log.warning(notice)
    return new, notice


def _in_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in ("model_index.json", "unet/config.json"))


def _load_folder(folder: Path, use_tiny_vae: bool, dtype: torch.dtype) -> SD15Components:
    missing = [f"{part}/" for part in SD15_PARTS if not (folder / part).is_dir() and not (part == "vae" and use_tiny_vae)]
    if missing:
        raise loading.ModelNotFoundError(f"{folder} is not a complete diffusers SD 1.5 folder: missing {', '.join(missing)}")
    return _load_parts(str(folder), use_tiny_vae, dtype)


def _load_parts(source: str, use_tiny_vae: bool, dtype: torch.dtype) -> SD15Components:
    """The components of a diffusers folder or hub id, in `dtype`."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    files = loading.repo_files({part: stem for part, stem in SD15_PARTS.items() if not (part == "vae" and use_tiny_vae)}, dtype)
    unet = loading.load_part(UNet2DConditionModel, source, "unet", files, dtype=dtype)
    tokenizer = loading.load_part(CLIPTokenizer, source, "tokenizer", files)
    text_encoder = loading.load_part(CLIPTextModel, source, "text_encoder", files, dtype=dtype)
    vae = None if use_tiny_vae else _load_vae(source, files, dtype)
    return SD15Components(tokenizer, text_encoder, unet, vae, loading.read_scheduler_config(source, DEFAULT_SCHEDULER_CONFIG, files))


def _load_vae(source: str, files: list[str], dtype: torch.dtype):
    """vae/ as the class its config names: the KL VAE of SD 1.5, or the tiny autoencoder of a model trained to
    decode with one."""
    import diffusers

    name = (loading.read_json(source, "vae/config.json", files) or {}).get("_class_name", AUTOENCODERS[0])
    if name not in AUTOENCODERS:
        raise ValueError(
            f"{source}: its vae/ is {name}, but an SD 1.5 model decodes with {' or '.join(AUTOENCODERS)}. "
            "Check that the folder is an SD 1.5 model, or pass use_tiny_vae=True to decode with TAESD."
        )
    # AutoencoderTiny records `block_out_channels` in the configs it saves, then warns when reading them
    with loading.diffusers_quiet() if name == "AutoencoderTiny" else contextlib.nullcontext():
        return loading.load_part(getattr(diffusers, name), source, "vae", files, dtype=dtype)


def _load_single_file(file: Path, config: str, use_tiny_vae: bool, dtype: torch.dtype) -> SD15Components:
    """One original-layout checkpoint: UNet (and full VAE) converted by diffusers, CLIP by prefix.

    `config` names where the component configs (and tokenizer) come from: a local diffusers folder
    or a hub id in the cache. A file without text-encoder weights uses the config's text encoder.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if file.suffix == ".safetensors":
        checkpoint = loading.load_safetensors(file, "Checkpoint")
    else:  # allow_pickle was given explicitly
        checkpoint = torch.load(str(file), map_location="cpu", weights_only=False)
        checkpoint = checkpoint.get("state_dict", checkpoint)
    local = Path(os.path.expanduser(config)).is_dir()
    prefix = "cond_stage_model.transformer."
    text_state = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    # configs only, but the text encoder's weights too when the file has none
    files = ["unet/config.json", "tokenizer/*", "text_encoder/config.json"] + ([] if text_state else ["text_encoder/model.safetensors"])
    files += [] if use_tiny_vae else ["vae/config.json"]

    def from_config(load):
        if local:
            return load(local_files_only=True)
        return loading.hub_call(load, config, files, "Config repository", option="config")

    unet = from_config(
        lambda **kw: UNet2DConditionModel.from_single_file(checkpoint, config=config, subfolder="unet", torch_dtype=dtype, **kw)
    )
    vae = None if use_tiny_vae else from_config(
        lambda **kw: AutoencoderKL.from_single_file(checkpoint, config=config, subfolder="vae", torch_dtype=dtype, **kw)
    )
    tokenizer = from_config(lambda **kw: CLIPTokenizer.from_pretrained(config, subfolder="tokenizer", **kw))
    if text_state:
        text_config = from_config(lambda **kw: CLIPTextConfig.from_pretrained(config, subfolder="text_encoder", **kw))
        text_encoder = CLIPTextModel(text_config)
        result = text_encoder.load_state_dict(fit_clip_keys(text_state, text_encoder), strict=False)
        if result.missing_keys:
            raise ValueError(
                f"{file}: its text encoder (cond_stage_model.transformer.*) does not fit the CLIP text encoder of {config!r}: "
                f"missing {result.missing_keys[:5]}. Is it an SD 1.5 checkpoint? For SD 2.x or SDXL files pass the "
                "matching sd_version and config."
            )
        text_encoder.to(dtype)
    else:
        text_encoder = from_config(
            lambda **kw: CLIPTextModel.from_pretrained(config, subfolder="text_encoder", torch_dtype=dtype, **kw)
        )
    # a hub config repository's scheduler is not fetched: the SD 1.5 defaults are its values
    scheduler_config = loading.read_scheduler_config(config, DEFAULT_SCHEDULER_CONFIG, []) if local else dict(DEFAULT_SCHEDULER_CONFIG)
    return SD15Components(tokenizer, text_encoder, unet, vae, scheduler_config)


def fit_clip_keys(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """A CLIP text-encoder state dict renamed to `model`'s own layout. Original checkpoints (and transformers
    < 5.6) nest everything under `text_model.`; transformers >= 5.6 flattened CLIPTextModel (its keys start at
    `embeddings.`), while CLIPTextModelWithProjection still nests. Whichever layout either side has, each key
    is matched with or without that prefix. `position_ids` (a buffer some files carry) is dropped."""
    own = set(model.state_dict())
    fitted = {}
    for key, value in state.items():
        bare = key.removeprefix("text_model.")
        if bare.endswith("position_ids"):
            continue
        fitted[next((k for k in (bare, "text_model." + bare) if k in own), key)] = value
    return fitted


def _fuse_lora(lora_key: str, parts: SD15Components, allow_pickle: bool, weight: float) -> None:
    """Load a LoRA (hub id, folder or file) through diffusers and fuse `weight` of it into the weights for good."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    state = read_lora(lora_key, "sd15", DEFAULT_LORA_KEY, allow_pickle)
    shell = StableDiffusionPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=LCMScheduler.from_config(parts.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    fuse_lora_into(shell, state, lora_key, weight)
