"""Resolving `hf_key` into model components: hub ids, local folders, single files, LoRA fusing.

`hf_key` may be
- a Hugging Face hub id (read through the hub cache; downloaded once when the hub is reachable),
- a local diffusers folder (`unet/` or `transformer/`, `text_encoder*/`, `tokenizer*/`, `vae/`, `scheduler/`),
- one `.safetensors` file in the original (LDM / SGM / MMDiT) layout, converted by diffusers' single-file
  loader with the configs of `config` (a hub id or a local diffusers folder; the family's hub id by default),
- `"tiny"`, `"tiny-xl"`, `"tiny-3"`: the random-weight miniatures of `models/tiny.py`, loaded back
  through this same code.
`.ckpt` files are pickles, which can run arbitrary code when opened: they are refused unless the
caller passes `allow_pickle=True`.

`detect_family` tells SD 1.5, SDXL and SD3 apart from the checkpoint itself (a folder's
`model_index.json` or subfolders, a single file's key names, a cached hub `model_index.json`, else the
hub id's name). LoRAs are read as state dicts first, so a LoRA made for another family is refused with
a message naming the family it was made for (`lora_family`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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


FAMILY_TITLES = {"sd15": "SD 1.5", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD3"}
# sd_version spellings (the seed project's "1.5" / "xl" / "3") and family names.
FAMILY_ALIASES = {"1.5": "sd15", "sd15": "sd15", "xl": "sdxl", "sdxl": "sdxl", "3": "sd3", "sd3": "sd3"}
TINY_KEYS = {"tiny": "sd15", "tiny-xl": "sdxl", "tiny-3": "sd3"}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


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


def hub_call(load, repo_id: str, files: list[str], what: str, hint: str = ""):
    """Try the hub cache first, then the hub itself (unless offline); say what is missing otherwise."""
    try:
        return load(local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if not _offline():
            try:
                return load(local_files_only=False)
            except (OSError, ValueError) as error:
                raise _not_found(repo_id, files, what, error, hint) from error
        raise _not_found(repo_id, files, what, cached_error, hint) from cached_error


def _not_found(repo_id: str, files: list[str], what: str, error: BaseException, hint: str = "") -> ModelNotFoundError:
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
        f"random-weight miniature.{' ' + hint if hint else ''}"
    )


def is_local(key: str) -> bool:
    return key.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(key)) or key.endswith(SINGLE_FILE_SUFFIXES)


def check_pickle(path: Path, allow_pickle: bool) -> None:
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{path} is a pickled checkpoint: opening it can run arbitrary code hidden in the file. "
            "Convert it to .safetensors, or pass allow_pickle=True if you trust its source."
        )


@contextlib.contextmanager
def reading_safetensors(file: Path | str, what: str):
    """Around a read of a .safetensors file: a corrupt or truncated one raises a ValueError that names
    the file and says what to do, instead of safetensors' bare "Error while deserializing header"."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        raise ValueError(
            f"{what} {str(file)!r} is not a valid .safetensors file ({error}): it may be truncated or corrupt. "
            "Download it again, or check that the path names the file you meant."
        ) from error


def load_safetensors(file: Path | str, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (`what` names it in errors: "Checkpoint", "LoRA", ...), on the CPU."""
    from safetensors.torch import load_file

    with reading_safetensors(file, what):
        return load_file(str(file))


def family_name(sd_version: str) -> str:
    """"1.5" / "xl" / "3" (the seed project's sd_version) or "sd15" / "sdxl" / "sd3" -> the family name."""
    name = FAMILY_ALIASES.get(str(sd_version).lower())
    if name is None:
        raise ValueError(f"unknown sd_version {sd_version!r}; use one of '1.5', 'xl', '3'")
    return name


def detect_family(hf_key: str) -> str:
    """The family of a checkpoint: "sd15", "sdxl" or "sd3" ("sd15" when nothing says otherwise)."""
    hf_key = str(hf_key)
    if hf_key in TINY_KEYS:
        return TINY_KEYS[hf_key]
    path = Path(os.path.expanduser(hf_key))
    if path.is_dir():
        return _family_of_folder(path)
    if path.is_file():
        return _family_of_file(path)
    if is_local(hf_key):
        return _family_of_name(path.name)
    return _family_of_hub_id(hf_key)


def _family_of_pipeline_class(name: str) -> str | None:
    if "StableDiffusion3" in name:
        return "sd3"
    if "XL" in name:
        return "sdxl"
    return "sd15" if name.startswith("StableDiffusion") else None


def _family_of_folder(folder: Path) -> str:
    index = folder / "model_index.json"
    if index.is_file():
        found = _family_of_pipeline_class(json.loads(index.read_text()).get("_class_name", ""))
        if found:
            return found
    if (folder / "transformer").is_dir():
        return "sd3"
    unet_config = folder / "unet" / "config.json"
    if (folder / "text_encoder_2").is_dir() or (
        unet_config.is_file() and json.loads(unet_config.read_text()).get("addition_embed_type") == "text_time"
    ):
        return "sdxl"
    return "sd15"


def _family_of_file(file: Path) -> str:
    if file.suffix != ".safetensors":  # a pickle: never opened just to look
        return _family_of_name(file.name)
    from safetensors import safe_open

    with reading_safetensors(file, "Checkpoint"), safe_open(str(file), framework="pt") as handle:
        keys = list(handle.keys())
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return "sdxl"
    if any("joint_blocks" in k for k in keys):
        return "sd3"
    return "sd15"


def _family_of_hub_id(repo_id: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # not a valid repo name: nothing cached
        cached = None
    if isinstance(cached, str):
        found = _family_of_pipeline_class(json.loads(Path(cached).read_text()).get("_class_name", ""))
        if found:
            return found
    return _family_of_name(repo_id)


def _family_of_name(name: str) -> str:
    lowered = name.lower()
    if re.search(r"(stable-diffusion-3|sd-?3)", lowered):
        return "sd3"
    if re.search(r"(^|[^a-z])(sd)?xl([^a-z]|$)", lowered):
        return "sdxl"
    return "sd15"


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
    check_pickle(path, allow_pickle)
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        parts = _load_single_file(path, config or DEFAULT_HF_KEY, use_tiny_vae)
    elif path.is_dir():
        parts = _load_folder(path, use_tiny_vae)
    elif is_local(hf_key):
        raise ModelNotFoundError(
            f"{hf_key!r} does not exist: expected a diffusers folder (with {', '.join(SD15_FILES.values())}) or a "
            "single .safetensors file. Check the path, pass a hub id, or set SEMDRAW_MODEL=tiny for the offline miniature."
        )
    else:
        parts = _load_hub(hf_key, use_tiny_vae)
    tokenizer, text_encoder, unet, vae, scheduler_config = parts
    if use_tiny_vae:
        vae = load_taesd(taesd_key)
    if lora_key:
        _fuse_lora(str(lora_key), tokenizer, text_encoder, unet, vae, scheduler_config)
    to_device([text_encoder, unet, vae], device, dtype, "SD 1.5")
    return SD15Components(tokenizer, text_encoder, unet, vae, scheduler_config)


def to_device(modules: list, device: torch.device, dtype: torch.dtype, what: str) -> None:
    """Move modules for inference; out of memory propagates, with a note saying what to try."""
    try:
        with diffusers_quiet():  # diffusers warns about casting with .to() even when nothing is affected
            for module in modules:
                module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    except torch.OutOfMemoryError as error:
        error.add_note(
            f"semdraw: not enough memory on {device} for the {what} model in {dtype}. Free memory first "
            "(del other pipelines, then torch.cuda.empty_cache()), use dtype=torch.float16 on a GPU, or pick a "
            "smaller family (SD 1.5 needs about 3 GB, SDXL about 8 GB, SD3 medium without T5 about 6 GB)."
        )
        raise


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
    return tokenizer, text_encoder, unet, vae, read_scheduler_config(str(folder), DEFAULT_SCHEDULER_CONFIG, [])


def _load_hub(repo_id: str, use_tiny_vae: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    files = [f for part, f in SD15_FILES.items() if not (part == "vae" and use_tiny_vae)]
    unet = load_part(UNet2DConditionModel, repo_id, "unet", files)
    tokenizer = load_part(CLIPTokenizer, repo_id, "tokenizer", files)
    text_encoder = load_part(CLIPTextModel, repo_id, "text_encoder", files)
    vae = None if use_tiny_vae else load_part(AutoencoderKL, repo_id, "vae", files)
    return tokenizer, text_encoder, unet, vae, read_scheduler_config(repo_id, DEFAULT_SCHEDULER_CONFIG, files)


def _hub_file(repo_id: str, filename: str, local_files_only: bool) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, local_files_only=local_files_only)


def _load_single_file(file: Path, config: str, use_tiny_vae: bool):
    """One original-layout checkpoint: UNet (and full VAE) converted by diffusers, CLIP by prefix.

    `config` names where the component configs (and tokenizer) come from: a local diffusers folder
    or a hub id in the cache. A file without text-encoder weights uses the config's text encoder.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if file.suffix == ".safetensors":
        checkpoint = load_safetensors(file, "Checkpoint")
    else:  # allow_pickle was given explicitly
        checkpoint = torch.load(str(file), map_location="cpu", weights_only=False)
        checkpoint = checkpoint.get("state_dict", checkpoint)
    local = Path(os.path.expanduser(config)).is_dir()
    files = [SD15_FILES["tokenizer"], "text_encoder/config.json", "unet/config.json"]

    def from_config(load):
        if local:
            return load(local_files_only=True)
        return hub_call(load, config, files, "Config repository")

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
    # a hub config repository's scheduler is not fetched: the SD 1.5 defaults are its values
    scheduler_config = read_scheduler_config(config, DEFAULT_SCHEDULER_CONFIG, []) if local else dict(DEFAULT_SCHEDULER_CONFIG)
    return tokenizer, text_encoder, unet, vae, scheduler_config


def load_part(cls, source: str, subfolder: str, files: list[str], what: str = "Model", hint: str = "", **kwargs):
    """One component (`cls.from_pretrained`) from a local diffusers folder or a hub id's `subfolder`."""
    folder = Path(os.path.expanduser(source))
    if folder.is_dir():
        if not (folder / subfolder).is_dir():
            raise ModelNotFoundError(f"{folder} is not a complete diffusers folder: missing {subfolder}/ (needs {', '.join(files)})")
        return cls.from_pretrained(folder / subfolder, **kwargs)
    return hub_call(lambda **kw: cls.from_pretrained(source, subfolder=subfolder, **kwargs, **kw), source, files, what, hint)


def read_scheduler_config(source: str, defaults: dict, files: list[str], hint: str = "") -> dict:
    """scheduler/scheduler_config.json of a folder or hub id over `defaults` (just `defaults` if a folder has none)."""
    folder = Path(os.path.expanduser(source))
    if folder.is_dir():
        file = folder / "scheduler" / "scheduler_config.json"
        return {**defaults, **json.loads(file.read_text())} if file.is_file() else dict(defaults)
    cached = hub_call(lambda **kw: _hub_file(source, "scheduler/scheduler_config.json", **kw), source, files, "Model", hint)
    return {**defaults, **json.loads(Path(cached).read_text())}


def local_file(key: str, default_weight_name: str, what: str, hint: str = "") -> Path:
    """A weights file named by a local file, a folder (holding `default_weight_name`, or a single
    .safetensors file), a hub id (its `default_weight_name`) or "owner/repo/file.safetensors" (that file
    of a hub repository)."""
    path = Path(os.path.expanduser(key))
    if path.is_file():
        return path
    if path.is_dir():
        candidates = [path / default_weight_name] if (path / default_weight_name).is_file() else sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise ModelNotFoundError(f"{what} folder {key!r} has no {default_weight_name} (nor a single .safetensors file)")
        return candidates[0]
    parts = key.split("/")
    if not key.startswith((".", "/", "~")) and len(parts) >= 3:
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    elif is_local(key):
        raise ModelNotFoundError(f"{what} {key!r} does not exist (expected a folder with {default_weight_name} or a .safetensors file)")
    else:
        repo_id, filename = key, default_weight_name
    return Path(hub_call(lambda **kw: _hub_file(repo_id, filename, **kw), repo_id, [filename], what, hint))


def lora_family(state: dict[str, torch.Tensor]) -> str | None:
    """Which family a LoRA state dict was made for, from its key names and shapes (None when unsure).

    Cross-attention width says it for real UNet LoRAs (768: SD 1.5, 1024: SD 2.x, 2048: SDXL); key
    names otherwise: SDXL's transformers are deeper than one block, or it has a second text encoder;
    an MMDiT (SD3) has transformer blocks and no UNet; any other UNet LoRA has the SD 1.x layout.
    """
    keys = list(state)
    widths = {1024: "sd2", 768: "sd15", 2048: "sdxl"}
    for key in keys:
        if re.search(r"attn2.*to_k.*(lora_down|lora_A|lora\.down)", key) and state[key].dim() == 2:
            found = widths.get(int(state[key].shape[1]))
            if found:
                return found
    text = "\n".join(keys)
    is_unet = re.search(r"(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)", text)
    if not is_unet:
        return "sd3" if re.search(r"(transformer_blocks|joint_blocks)", text) else None
    if re.search(r"(lora_te2_|text_encoder_2)", text) or re.search(r"transformer_blocks[._][1-9]", text):
        return "sdxl"
    # A UNet LoRA with one-block transformers and one text encoder: the SD 1.x layout.
    return "sd15"


def check_lora_family(state: dict[str, torch.Tensor], family: str, lora_key: str, suggestion: str) -> None:
    found = lora_family(state)
    if found is not None and found != family:
        raise ValueError(
            f"LoRA {lora_key!r} is made for {FAMILY_TITLES[found]}, but this model is {FAMILY_TITLES[family]}: its "
            f"layers do not fit. Use a LoRA for {FAMILY_TITLES[family]} (the default is {suggestion}), or pass "
            "lora_key=None to load the model without one."
        )


def read_lora(lora_key: str, family: str, suggestion: str) -> dict[str, torch.Tensor]:
    """A LoRA's state dict (file, folder, hub id or "owner/repo/file"), checked against the family."""
    state = load_safetensors(local_file(lora_key, LORA_WEIGHT_NAME, "LoRA"), "LoRA")
    check_lora_family(state, family, lora_key, suggestion)
    return state


def load_taesd(key: str):
    from diffusers import AutoencoderTiny

    def load(source, **kw):
        # AutoencoderTiny records `block_out_channels` in the configs it saves, then warns when reading them.
        with diffusers_quiet():
            return AutoencoderTiny.from_pretrained(source, **kw)

    if Path(os.path.expanduser(key)).is_dir():
        return load(os.path.expanduser(key))
    if is_local(key):
        raise ModelNotFoundError(f"TAESD folder {key!r} does not exist (expected config.json + weights)")
    files = ["config.json", "diffusion_pytorch_model.safetensors"]
    return hub_call(lambda **kw: load(key, **kw), key, files, "TAESD")


def _fuse_lora(lora_key: str, tokenizer, text_encoder, unet, vae, scheduler_config: dict) -> None:
    """Load a LoRA (hub id, folder or file) through diffusers and fuse it into the weights for good."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    state = read_lora(lora_key, "sd15", DEFAULT_LORA_KEY)
    shell = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=LCMScheduler.from_config(scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    fuse_lora_into(shell, state)


@contextlib.contextmanager
def diffusers_quiet():
    """Silence diffusers' warnings for a moment: ones this module has already checked for (a UNet-only
    LoRA has no text-encoder keys: read_lora checked its family) or that do not apply."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def fuse_lora_into(shell, state: dict[str, torch.Tensor]) -> None:
    """Load a LoRA state dict through a diffusers pipeline shell and fuse it into the weights for good."""
    with diffusers_quiet():
        shell.load_lora_weights(state, adapter_name="accelerator")
    shell.fuse_lora(lora_scale=1.0)
    shell.unload_lora_weights()
