"""Resolving `hf_key` into SD 1.5 components: hub ids, local folders, single files, LoRA fusing.

`hf_key` may be
- a Hugging Face hub id (read through the hub cache; downloaded once when the hub is reachable),
- a local diffusers folder (`unet/`, `text_encoder/`, `tokenizer/`, `vae/`, `scheduler/`),
- one `.safetensors` file in the original (LDM) layout, converted by diffusers' single-file loader with
  the configs of `config` (a hub id or a local diffusers folder; the SD 1.5 hub id by default),
- `"tiny"`: the random-weight miniature of `models/tiny.py`, loaded back through this same code.
`.ckpt` files are pickles, which can run arbitrary code when opened: they are refused unless the
caller passes `allow_pickle=True`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_HF_KEY = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_LORA_KEY = "latent-consistency/lcm-lora-sdv1-5"
DEFAULT_TAESD_KEY = "madebyollin/taesd"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
DEFAULT_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}
# What a hub snapshot of an SD 1.5 model must hold for this engine (named in ModelNotFoundError).
SD15_FILES = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
    "tokenizer": "tokenizer/vocab.json",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "scheduler": "scheduler/scheduler_config.json",
}


class ModelNotFoundError(FileNotFoundError):
    """Weights could not be found locally and could not be downloaded."""


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint (`.ckpt`) was given without `allow_pickle=True`."""


@dataclass
class SD15Components:
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: dict


def resolve_device(device: Any) -> torch.device:
    """torch.device, "cuda", "cuda:1", "cpu", or an int GPU index (the seed demo's --device)."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, int) and not isinstance(device, bool):
        return torch.device("cuda", device)
    if isinstance(device, str):
        return torch.device(int(device) if device.isdigit() else device)
    raise TypeError(f"device must be a torch.device, a string such as 'cuda:0' or 'cpu', or a GPU index (got {device!r})")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_call(load, repo_id: str, files: list[str], what: str):
    """Try the hub cache first, then the hub itself (unless offline); say what is missing otherwise."""
    try:
        return load(local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if not _offline():
            try:
                return load(local_files_only=False)
            except (OSError, ValueError) as error:
                raise _not_found(repo_id, files, what, error) from error
        raise _not_found(repo_id, files, what, cached_error) from cached_error


def _not_found(repo_id: str, files: list[str], what: str, error: BaseException) -> ModelNotFoundError:
    from huggingface_hub import try_to_load_from_cache

    missing = []
    for name in files:
        try:
            cached = try_to_load_from_cache(repo_id, name)
        except Exception:  # an id that is not a valid repo name has nothing cached
            cached = None
        if not isinstance(cached, str):
            missing.append(name)
    why = "the hub is unreachable or HF_HUB_OFFLINE is set" if _offline() else f"download failed: {type(error).__name__}"
    return ModelNotFoundError(
        f"{what} {repo_id!r} is not in the Hugging Face cache and could not be downloaded ({why}). "
        f"Missing: {', '.join(missing) or 'the files of this repository'}. To fix: run "
        f"`huggingface-cli login` if the repository is gated, then `huggingface-cli download {repo_id}` on a "
        f"machine with network access (or copy the cache over); or pass a local diffusers folder or a "
        f"single .safetensors file as hf_key; or set SEMDRAW_MODEL=tiny (hf_key='tiny') for the offline "
        f"random-weight miniature."
    )


def _is_local(key: str) -> bool:
    return key.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(key)) or key.endswith(
        (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
    )


def load_sd15(
    hf_key: str = DEFAULT_HF_KEY,
    *,
    device: torch.device,
    dtype: torch.dtype,
    lora_key: str | bool | None = DEFAULT_LORA_KEY,
    use_tiny_vae: bool = True,
    taesd_key: str = DEFAULT_TAESD_KEY,
    config: str | None = None,
    allow_pickle: bool = False,
) -> SD15Components:
    """Load SD 1.5 components for `hf_key`, fuse the LoRA (LCM-LoRA by default) and pick the autoencoder."""
    if hf_key == "tiny":
        from .models.tiny import tiny_model_dir

        root = tiny_model_dir()
        hf_key = str(root / "sd15")
        lora_key = str(root / "lcm-lora") if lora_key == DEFAULT_LORA_KEY else lora_key
        taesd_key = str(root / "taesd") if taesd_key == DEFAULT_TAESD_KEY else taesd_key
    hf_key = str(hf_key)
    path = Path(os.path.expanduser(hf_key))
    if path.suffix in {".ckpt", ".pt", ".pth", ".bin"}:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{hf_key} is a pickled checkpoint: opening it can run arbitrary code hidden in the file. "
                "Convert it to .safetensors, or pass allow_pickle=True if you trust its source."
            )
    if path.is_file() and path.suffix in {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}:
        parts = _load_single_file(path, config or DEFAULT_HF_KEY, use_tiny_vae)
    elif path.is_dir():
        parts = _load_folder(path, use_tiny_vae)
    elif _is_local(hf_key):
        raise ModelNotFoundError(
            f"{hf_key!r} does not exist: expected a diffusers folder (with {', '.join(SD15_FILES.values())}) or a "
            "single .safetensors file. Check the path, pass a hub id, or set SEMDRAW_MODEL=tiny for the offline miniature."
        )
    else:
        parts = _load_hub(hf_key, use_tiny_vae)
    tokenizer, text_encoder, unet, vae, scheduler_config = parts
    if use_tiny_vae:
        vae = _load_taesd(taesd_key)
    if lora_key:
        _fuse_lora(str(lora_key), tokenizer, text_encoder, unet, vae, scheduler_config)
    for module in (text_encoder, unet, vae):
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return SD15Components(tokenizer, text_encoder, unet, vae, scheduler_config)


def _read_scheduler_config(folder: Path) -> dict:
    file = folder / "scheduler" / "scheduler_config.json"
    return {**DEFAULT_SCHEDULER_CONFIG, **json.loads(file.read_text())} if file.is_file() else dict(DEFAULT_SCHEDULER_CONFIG)


def _load_folder(folder: Path, use_tiny_vae: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [name for part, name in SD15_FILES.items() if not (folder / part).is_dir() and not (part == "vae" and use_tiny_vae)]
    if missing:
        raise ModelNotFoundError(f"{folder} is not a complete diffusers SD 1.5 folder: missing {', '.join(missing)}")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = None if use_tiny_vae else AutoencoderKL.from_pretrained(folder / "vae")
    return tokenizer, text_encoder, unet, vae, _read_scheduler_config(folder)


def _load_hub(repo_id: str, use_tiny_vae: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    files = [f for part, f in SD15_FILES.items() if not (part == "vae" and use_tiny_vae)]

    def load(cls, subfolder):
        return _hub_call(lambda **kw: cls.from_pretrained(repo_id, subfolder=subfolder, **kw), repo_id, files, "Model")

    unet = load(UNet2DConditionModel, "unet")
    tokenizer = load(CLIPTokenizer, "tokenizer")
    text_encoder = load(CLIPTextModel, "text_encoder")
    vae = None if use_tiny_vae else load(AutoencoderKL, "vae")
    scheduler_file = _hub_call(
        lambda **kw: _hub_file(repo_id, "scheduler/scheduler_config.json", **kw), repo_id, files, "Model"
    )
    return tokenizer, text_encoder, unet, vae, {**DEFAULT_SCHEDULER_CONFIG, **json.loads(Path(scheduler_file).read_text())}


def _hub_file(repo_id: str, filename: str, local_files_only: bool) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, local_files_only=local_files_only)


def _load_single_file(file: Path, config: str, use_tiny_vae: bool):
    """One original-layout checkpoint: UNet (and full VAE) converted by diffusers, CLIP by prefix.

    `config` names where the component configs (and tokenizer) come from: a local diffusers folder
    or a hub id in the cache. A file without text-encoder weights uses the config's text encoder.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if file.suffix == ".safetensors":
        checkpoint = load_file(str(file))
    else:  # allow_pickle was given explicitly
        checkpoint = torch.load(str(file), map_location="cpu", weights_only=False)
        checkpoint = checkpoint.get("state_dict", checkpoint)
    local = Path(os.path.expanduser(config)).is_dir()
    files = [SD15_FILES["tokenizer"], "text_encoder/config.json", "unet/config.json"]

    def from_config(load):
        if local:
            return load(local_files_only=True)
        return _hub_call(load, config, files, "Config repository")

    unet = from_config(lambda **kw: UNet2DConditionModel.from_single_file(checkpoint, config=config, subfolder="unet", **kw))
    vae = None if use_tiny_vae else from_config(
        lambda **kw: AutoencoderKL.from_single_file(checkpoint, config=config, subfolder="vae", **kw)
    )
    tokenizer = from_config(lambda **kw: CLIPTokenizer.from_pretrained(config, subfolder="tokenizer", **kw))
    prefix = "cond_stage_model.transformer."
    text_state = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    if text_state:
        text_config = from_config(lambda **kw: CLIPTextConfig.from_pretrained(config, subfolder="text_encoder", **kw))
        text_encoder = CLIPTextModel(text_config)
        text_state.pop("text_model.embeddings.position_ids", None)
        result = text_encoder.load_state_dict(text_state, strict=False)
        if result.missing_keys:
            raise ValueError(f"{file}: text encoder weights incomplete, missing {result.missing_keys[:5]}")
    else:
        text_encoder = from_config(lambda **kw: CLIPTextModel.from_pretrained(config, subfolder="text_encoder", **kw))
    if local:
        scheduler_config = _read_scheduler_config(Path(os.path.expanduser(config)))
    else:
        scheduler_config = dict(DEFAULT_SCHEDULER_CONFIG)
    return tokenizer, text_encoder, unet, vae, scheduler_config


def _load_taesd(key: str):
    from diffusers import AutoencoderTiny

    if Path(os.path.expanduser(key)).is_dir():
        return AutoencoderTiny.from_pretrained(os.path.expanduser(key))
    if _is_local(key):
        raise ModelNotFoundError(f"TAESD folder {key!r} does not exist (expected config.json + weights)")
    files = ["config.json", "diffusion_pytorch_model.safetensors"]
    return _hub_call(lambda **kw: AutoencoderTiny.from_pretrained(key, **kw), key, files, "TAESD")


def _fuse_lora(lora_key: str, tokenizer, text_encoder, unet, vae, scheduler_config: dict) -> None:
    """Load a LoRA (hub id, folder or file) through diffusers and fuse it into the weights for good."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    shell = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=LCMScheduler.from_config(scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    path = Path(os.path.expanduser(lora_key))
    if path.is_file():
        shell.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="lcm")
    elif path.is_dir():
        shell.load_lora_weights(str(path), weight_name=LORA_WEIGHT_NAME, adapter_name="lcm")
    elif _is_local(lora_key):
        raise ModelNotFoundError(f"LoRA {lora_key!r} does not exist (expected a folder with {LORA_WEIGHT_NAME} or a .safetensors file)")
    else:
        _hub_call(
            lambda **kw: shell.load_lora_weights(lora_key, weight_name=LORA_WEIGHT_NAME, adapter_name="lcm", **kw),
            lora_key, [LORA_WEIGHT_NAME], "LoRA",
        )
    shell.fuse_lora(lora_scale=1.0)
    shell.unload_lora_weights()
