"""The SD3 family: MMDiT (`SD3Transformer2DModel`), flow matching with Flash-SD3, 16 latent channels, TAESD3.

Text (as diffusers' StableDiffusion3Pipeline): CLIP-L and CLIP-G (both with projection) give their
penultimate hidden states, concatenated (N, 77, 2048) and zero-padded to the T5 width (4096); T5's
(N, 256, 4096) sequence follows. Without T5 (the default, as in the seed project: it saves ~9 GB)
that part is zeros, exactly what diffusers feeds when `text_encoder_3` is None; `use_t5=True` loads
`text_encoder_3` / `tokenizer_3` from the model instead. The pooled projections are CLIP-L's and
CLIP-G's projected embeddings concatenated (N, 2048). Everything travels in the conditioning dict.

Sampling: Flash-SD3 (`jasperai/flash-sd3`, a PEFT LoRA on the transformer, merged at load time), a
consistency sampler over 4 steps of the model's flow-matching scheduler config (shift 3.0): timesteps
1000, 857.69, 602.15, 8.93 (`schedulers.FlowMatchSchedule`); the transformer predicts the velocity,
x0 = x_t - sigma v, and x0 is re-noised to the next step's sigma.

The transformer patches the latent in 2x2 blocks; a canvas whose latent side is odd (a multiple of
8 but not of 16 pixels) is padded by one latent row/column for the model call and cropped back.

The SD3 weights are gated on the hub: accept the licence on the model page, then `hf auth login`
(`huggingface-cli login` with older huggingface_hub versions).

LoRAs: a PEFT adapter (Flash-SD3's layout: adapter_config.json + adapter_model.safetensors) is merged
through PEFT; a diffusers or kohya LoRA file (pytorch_lora_weights.safetensors) through diffusers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .. import loading
from ..schedulers import FlowMatchSchedule
from .base import Conditioning, LatentFamily
from .lora import LORA_WEIGHT_NAME, check_lora_family, fuse_lora_into, read_lora
from .options import LoadOptions
from .sources import Sources

log = logging.getLogger("semdraw_widget")
DEFAULT_SD3_KEY = "stabilityai/stable-diffusion-3-medium-diffusers"
DEFAULT_SD3_LORA_KEY = "jasperai/flash-sd3"
DEFAULT_TAESD3_KEY = "madebyollin/taesd3"
PEFT_FILES = ["adapter_config.json", "adapter_model.safetensors"]
T5_MAX_LENGTH = 256
SD3_PARTS = {  # the components read from an SD3 repository (see loading.repo_files)
    "transformer": loading.DIFFUSERS_WEIGHTS,
    "text_encoder": loading.TRANSFORMERS_WEIGHTS,
    "text_encoder_2": loading.TRANSFORMERS_WEIGHTS,
    "tokenizer": None,
    "tokenizer_2": None,
    "vae": loading.DIFFUSERS_WEIGHTS,
    "scheduler": None,
}
T5_PARTS = {"text_encoder_3": loading.SHARDED_WEIGHTS, "tokenizer_3": None}
GATED_HINT = (
    "Stable Diffusion 3 weights are gated: open https://huggingface.co/{repo} while logged in and accept its licence, "
    "then run `hf auth login` (older huggingface_hub: `huggingface-cli login`), or set HF_TOKEN, on this machine."
)
DEFAULT_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}


@dataclass
class SD3Components:
    tokenizer: Any
    tokenizer_2: Any
    text_encoder: Any
    text_encoder_2: Any
    transformer: Any
    vae: Any
    scheduler_config: dict
    tokenizer_3: Any = None
    text_encoder_3: Any = None


class SD3(LatentFamily):
    """Stable Diffusion 3 medium (+ Flash-SD3 merged, + TAESD3 by default, no T5 by default)."""

    name = "sd3"
    default_sources = Sources(DEFAULT_SD3_KEY, DEFAULT_SD3_LORA_KEY, DEFAULT_TAESD3_KEY)
    latent_channels = 16
    vae_scale = 8
    default_tile_size = 1024
    default_size = 1024
    stream_cover_alpha = 0.1  # as the seed project's SD3 stream
    default_t_index_list = (0, 1, 2, 3)

    def __init__(self, components: SD3Components, device: torch.device, dtype: torch.dtype):
        super().__init__(components.vae, device, dtype)
        self.tokenizers = (components.tokenizer, components.tokenizer_2)
        self.text_encoders = (components.text_encoder, components.text_encoder_2)
        self.tokenizer_3, self.text_encoder_3 = components.tokenizer_3, components.text_encoder_3
        self.transformer = components.transformer
        self.joint_attention_dim = int(self.transformer.config.joint_attention_dim)
        self.schedule = FlowMatchSchedule(components.scheduler_config)

    @classmethod
    def _load(cls, sources: Sources, options: LoadOptions, device: torch.device, dtype: torch.dtype) -> "SD3":
        """SD3 from a hub id, diffusers folder or single file (`config`: where its configs come from).
        `lora_key=True` merges Flash-SD3 (a PEFT adapter: hub id or folder with adapter_config.json)."""
        use_t5 = bool(options.use_t5)
        parts = _load_components(sources.hf_key, options.config, options.allow_pickle, need_vae=not options.use_tiny_vae, use_t5=use_t5, dtype=dtype)
        if options.use_tiny_vae:
            parts.vae = loading.load_taesd(sources.taesd(options.taesd_key))
        lora_key = sources.lora(options.lora_key)
        if lora_key:
            parts.transformer = _apply_lora(parts, str(lora_key), options.allow_pickle, options.lora_weight)
        modules = [parts.text_encoder, parts.text_encoder_2, parts.transformer, parts.vae]
        loading.to_device(modules + ([parts.text_encoder_3] if use_t5 else []), device, dtype, "SD3")
        return cls(parts, device, dtype)

    # ---- text -------------------------------------------------------------------------------
    def encode_prompts(self, texts: Sequence[str]) -> Conditioning:
        """{"encoder_hidden_states": (N, 77 + 256, D_T5), "pooled_projections": (N, D_L + D_G)}; cached per text."""
        return self.cached_conditioning(texts, self._encode)

    def _encode(self, texts: list[str]) -> Conditioning:
        hidden, pooled = self.clip_pair_outputs(texts)
        clip = torch.cat(hidden, dim=-1)
        clip = F.pad(clip, (0, self.joint_attention_dim - clip.shape[-1]))
        if self.text_encoder_3 is None:
            t5 = clip.new_zeros(len(texts), T5_MAX_LENGTH, self.joint_attention_dim)
        else:
            ids = self.tokenizer_3(
                texts, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True, add_special_tokens=True, return_tensors="pt"
            ).input_ids.to(self.device)
            t5 = self.text_encoder_3(ids)[0].to(clip.dtype)
        return {
            "encoder_hidden_states": torch.cat([clip, t5], dim=-2).to(self.dtype),
            "pooled_projections": torch.cat(pooled, dim=-1).to(self.dtype),
        }

    # ---- denoiser ---------------------------------------------------------------------------
    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The transformer's velocity v = eps - x0 for (B, 16, h, w) latents, (B,) float timesteps in [0, 1000]."""
        h, w = latents.shape[-2:]
        patch = int(self.transformer.config.patch_size)
        pad_h, pad_w = -h % patch, -w % patch
        if pad_h or pad_w:
            latents = F.pad(latents, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.transformer(
            hidden_states=latents, timestep=timesteps, encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"], return_dict=False,
        )[0]
        return out[..., :h, :w]


def _load_components(hf_key: str, config: str | None, allow_pickle: bool, need_vae: bool, use_t5: bool, dtype) -> SD3Components:
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    path = Path(os.path.expanduser(hf_key))
    loading.check_pickle(path, allow_pickle)
    if path.is_file():
        return _load_single_file(path, config or DEFAULT_SD3_KEY, use_t5, dtype)
    if loading.is_local(hf_key) and not path.is_dir():
        raise loading.ModelNotFoundError(
            f"{hf_key!r} does not exist: expected an SD3 diffusers folder (with {', '.join(SD3_PARTS)}/) or a "
            "single .safetensors file. Check the path, pass a hub id, or use hf_key='tiny-3' for the offline miniature."
        )
    parts = {**SD3_PARTS, **(T5_PARTS if use_t5 else {})}
    if not need_vae:
        del parts["vae"]
    files = loading.repo_files(parts, dtype)
    hint = GATED_HINT.format(repo=hf_key)

    def part(cls, subfolder, weights=True):
        return loading.load_part(cls, hf_key, subfolder, files, hint=hint, dtype=dtype if weights else None)

    components = SD3Components(
        tokenizer=part(CLIPTokenizer, "tokenizer", weights=False),
        tokenizer_2=part(CLIPTokenizer, "tokenizer_2", weights=False),
        text_encoder=part(CLIPTextModelWithProjection, "text_encoder"),
        text_encoder_2=part(CLIPTextModelWithProjection, "text_encoder_2"),
        transformer=part(SD3Transformer2DModel, "transformer"),
        vae=part(AutoencoderKL, "vae") if need_vae else None,
        scheduler_config=loading.read_scheduler_config(hf_key, DEFAULT_SCHEDULER, files, hint),
    )
    if use_t5:
        from transformers import T5EncoderModel, T5TokenizerFast

        components.tokenizer_3 = part(T5TokenizerFast, "tokenizer_3", weights=False)
        components.text_encoder_3 = part(T5EncoderModel, "text_encoder_3")
    return components


def _load_single_file(file: Path, config: str, use_t5: bool, dtype) -> SD3Components:
    """An original-layout SD3 checkpoint (e.g. sd3_medium_incl_clips.safetensors) through diffusers'
    single-file loader; `config` (a folder or hub id) supplies configs and tokenizers."""
    from diffusers import StableDiffusion3Pipeline

    local = Path(os.path.expanduser(config)).is_dir()
    skip_t5 = {} if use_t5 else {"text_encoder_3": None, "tokenizer_3": None}

    def load(**kw):
        return StableDiffusion3Pipeline.from_single_file(str(file), config=config, torch_dtype=dtype, **skip_t5, **kw)

    hint = GATED_HINT.format(repo=config)
    config_parts = {part: loading.CONFIG_ONLY if stem else None for part, stem in {**SD3_PARTS, **(T5_PARTS if use_t5 else {})}.items()}
    files = loading.repo_files(config_parts)
    pipe = load(local_files_only=True) if local else loading.hub_call(load, config, files, "Config repository", hint, option="config")
    return SD3Components(
        pipe.tokenizer, pipe.tokenizer_2, pipe.text_encoder, pipe.text_encoder_2, pipe.transformer, pipe.vae,
        {**DEFAULT_SCHEDULER, **dict(pipe.scheduler.config)}, pipe.tokenizer_3, pipe.text_encoder_3,
    )


def _apply_lora(parts: SD3Components, lora_key: str, allow_pickle: bool, weight: float):
    """The transformer with `weight` of the LoRA merged: a PEFT adapter (Flash-SD3's layout) through PEFT, any other
    LoRA file (diffusers or kohya layout, e.g. a hub repository's pytorch_lora_weights.safetensors) through diffusers."""
    folder = _peft_folder(lora_key)
    if folder is not None:
        return _merge_peft_lora(parts.transformer, folder, lora_key, weight)
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    hint = (
        f"SD3 LoRAs are read as a PEFT adapter ({' + '.join(PEFT_FILES)}, like {DEFAULT_SD3_LORA_KEY}) or as a "
        f"diffusers LoRA file ({LORA_WEIGHT_NAME}); {lora_key!r} has neither in the cache or on the hub."
    )
    state = read_lora(lora_key, "sd3", DEFAULT_SD3_LORA_KEY, allow_pickle, hint)
    shell = StableDiffusion3Pipeline(
        transformer=parts.transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config),
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, text_encoder_2=parts.text_encoder_2,
        tokenizer_2=parts.tokenizer_2, text_encoder_3=parts.text_encoder_3, tokenizer_3=parts.tokenizer_3,
    )
    fuse_lora_into(shell, state, lora_key, weight)
    return parts.transformer


def _merge_peft_lora(transformer, folder: Path, lora_key: str, weight: float):
    """Merge `weight` of a PEFT LoRA adapter (Flash-SD3's layout: adapter_config.json + adapter_model.safetensors)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    check_lora_family(loading.load_safetensors(folder / PEFT_FILES[1], "LoRA"), "sd3", lora_key, DEFAULT_SD3_LORA_KEY)
    adapted = PeftModel.from_pretrained(transformer, str(folder))
    if weight != 1.0:
        for layer in adapted.modules():
            if isinstance(layer, LoraLayer):
                layer.scale_layer(weight)
    return adapted.merge_and_unload()


def _peft_folder(lora_key: str) -> Path | None:
    """The local folder of a PEFT adapter given as a folder or a hub id (both files fetched through the cache),
    or None when `lora_key` names some other LoRA: a file, a folder without adapter_config.json, a hub file
    (owner/repo/file.safetensors), or a hub repository without adapter_config.json."""
    path = Path(os.path.expanduser(lora_key))
    if path.is_file() and path.name == PEFT_FILES[1]:  # the weights file of a PEFT adapter folder
        path = path.parent
    if path.exists() or loading.is_local(lora_key):
        return path if path.is_dir() and (path / PEFT_FILES[0]).is_file() else None
    if len(lora_key.split("/")) != 2:
        return None
    try:
        config = loading.local_file(f"{lora_key}/{PEFT_FILES[0]}", PEFT_FILES[0], "LoRA")
    except loading.ModelNotFoundError:
        if lora_key == DEFAULT_SD3_LORA_KEY:
            raise  # Flash-SD3 is a PEFT adapter: name its files, not a diffusers LoRA file it never had
        # no PEFT adapter to be had: read as a diffusers LoRA repository, whose error then says what is missing
        log.info("LoRA %s: no %s in the cache or on the hub, reading it as a diffusers LoRA", lora_key, PEFT_FILES[0])
        return None
    return [config, loading.local_file(f"{lora_key}/{PEFT_FILES[1]}", PEFT_FILES[1], "LoRA")][0].parent
