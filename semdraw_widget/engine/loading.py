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
import logging
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("semdraw_widget")
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
# How each component of a diffusers repository is stored, for the files named in ModelNotFoundError:
# a model's weights-file stem (diffusers' or transformers' name), or None for a folder read whole.
DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS, SHARDED_WEIGHTS = "diffusion_pytorch_model", "model", "model-*"
CONFIG_ONLY = "config.json"  # a model built from its config, its weights coming from elsewhere
SD15_PARTS = {
    "unet": DIFFUSERS_WEIGHTS,
    "text_encoder": TRANSFORMERS_WEIGHTS,
    "tokenizer": None,
    "vae": DIFFUSERS_WEIGHTS,
    "scheduler": None,
}
# Removed from the hub (runwayml deleted its repositories in 2024); a maintained copy holds the same files.
REMOVED_REPOS = {"runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}

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
    notice: str = ""  # something the user should know about what was loaded (shown by the widget)


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


# Without network every hub request waits out huggingface_hub's retries (about 24 s): once one fails that way,
# the family look-up, the fp16 variant and the following components go straight to the cache for this long.
HUB_RETRY_AFTER_S = 60.0
_hub_unreachable = (float("-inf"), "")  # (time.monotonic() of the last connection failure, its cause)


def _hub_unreachable_reason() -> str:
    """The cause of a connection failure within the last HUB_RETRY_AFTER_S seconds, else ""."""
    since, reason = _hub_unreachable
    return reason if time.monotonic() - since < HUB_RETRY_AFTER_S else ""


def _mark_if_unreachable(error: BaseException) -> str:
    """The root cause of a failed download when it is that the hub could not be reached (noted for
    HUB_RETRY_AFTER_S), else "" (a missing file, a gated repository...). diffusers and transformers re-raise
    huggingface_hub's LocalEntryNotFoundError (its "cannot connect" error) as "does not appear to have a file
    named ...", so the whole chain is searched. Only for errors of a download: a cache miss raises it too."""
    from huggingface_hub.utils import LocalEntryNotFoundError

    # OfflineModeIsEnabled is a ConnectionError; the transport errors are those of whichever HTTP client is in use
    connection_errors = (LocalEntryNotFoundError, ConnectionError) + tuple(
        sys.modules[client].TransportError for client in ("httpx2", "httpx") if client in sys.modules
    )
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    if not any(isinstance(link, connection_errors) for link in chain):
        return ""
    global _hub_unreachable
    _hub_unreachable = (time.monotonic(), _first_line(chain[-1]))
    return _hub_unreachable[1]


def _first_line(error: BaseException) -> str:
    first_line = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}{': ' + first_line if first_line else ''}"


def repo_files(parts: dict[str, str | None], dtype: torch.dtype | None = None, pipeline: bool = True) -> list[str]:
    """The files (globs for folders read whole) that loading these components reads from a hub repository:
    each model's config and weights (the fp16 variant in float16), tokenizer and scheduler folders, and a
    pipeline repository's model_index.json (read to tell the family). Subfolder "" is the repository root."""
    variant = ".fp16" if dtype == torch.float16 else ""
    files = ["model_index.json"] if pipeline else []
    for subfolder, stem in parts.items():
        folder = f"{subfolder}/" if subfolder else ""
        if stem is None:
            files.append(f"{folder}*")
        elif stem == CONFIG_ONLY:
            files.append(f"{folder}config.json")
        elif stem == SHARDED_WEIGHTS:  # T5: shards named by an index file
            # transformers names the shards model-00001-of-00002.safetensors, or model.fp16-00001-of-00002.safetensors
            files += [f"{folder}*.json", f"{folder}model{variant or '-'}*.safetensors"]
        else:
            files += [f"{folder}config.json", f"{folder}{stem}{variant}.safetensors"]
    return files


def hub_call(load, repo_id: str, files: list[str], what: str, hint: str = "", option: str = "hf_key"):
    """Try the hub cache first, then the hub itself (unless offline, or found unreachable in the last
    HUB_RETRY_AFTER_S seconds); say what is missing otherwise.
    `files` are what `hf download` needs; `option` is the argument through which a local copy can be given."""
    try:
        return load(local_files_only=True)
    except (OSError, ValueError) as cached_error:
        error = cached_error
    unreachable = _hub_unreachable_reason()
    if not _offline() and not unreachable:
        try:
            return load(local_files_only=False)
        except (OSError, ValueError) as download_error:
            error, unreachable = download_error, _mark_if_unreachable(download_error)
    raise _not_found(repo_id, files, what, error, hint, option, unreachable) from error


LOCAL_ALTERNATIVES = {
    "hf_key": "pass a local diffusers folder or a single .safetensors file as hf_key; or set SEMDRAW_MODEL=tiny "
    "(hf_key='tiny') for the offline random-weight miniature",
    "lora_key": "pass a local LoRA file or folder as lora_key; or lora_key=None to load the model without it",
    "taesd_key": "pass a local TAESD folder as taesd_key; or use_tiny_vae=False to decode with the model's own VAE",
}


def _not_found(
    repo_id: str, files: list[str], what: str, error: BaseException, hint: str = "", option: str = "hf_key",
    unreachable: str = "",
) -> ModelNotFoundError:
    """`unreachable`: why the hub could not be reached, when that is why the download failed or was not tried."""
    from huggingface_hub import try_to_load_from_cache

    missing = []
    for name in files:
        if "*" in name:  # a folder read whole: not one file to look up
            continue
        try:
            cached = try_to_load_from_cache(repo_id, name)
        except Exception:  # an id that is not a valid repo name has nothing cached
            cached = None
        if not isinstance(cached, str):
            missing.append(name)
    if _offline():
        why = "the hub is unreachable or HF_HUB_OFFLINE is set"
    elif unreachable:
        left = max(1.0, HUB_RETRY_AFTER_S - (time.monotonic() - _hub_unreachable[0]))
        why = f"the hub is unreachable ({unreachable}); not asked again for {left:.0f} s"
    else:
        why = f"download failed: {_first_line(error)}"
    arguments = " ".join(f'"{name}"' if "*" in name else name for name in files)
    variant_note = " (a repository without fp16 files: the same names without `.fp16`)" if any(".fp16" in f for f in files) else ""
    alternative = LOCAL_ALTERNATIVES.get(option, f"pass a local folder or file as {option}")
    return ModelNotFoundError(
        f"{what} {repo_id!r} is not in the Hugging Face cache and could not be downloaded ({why}). "
        f"Missing: {', '.join(missing) or 'the files of this repository'}. To fix: on a machine with network access "
        f"run `hf auth login` if the repository is gated, then `hf download {repo_id} {arguments}`{variant_note} "
        f"(older huggingface_hub: `huggingface-cli login` and `huggingface-cli download` with the same arguments), "
        f"or copy the cache over; or {alternative}.{' ' + hint if hint else ''}"
    )


def is_local(key: str) -> bool:
    return key.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(key)) or key.endswith(SINGLE_FILE_SUFFIXES)


def check_pickle(path: Path, allow_pickle: bool, what: str = "checkpoint") -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:  # EVIL.CKPT is a pickle too
        raise UnsafeCheckpointError(
            f"{path} is a pickled {what} ({path.suffix}): pickles are not opened by default, because opening one can "
            "run arbitrary code hidden in the file. Convert it to .safetensors, or pass allow_pickle=True if you "
            "trust its source."
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
    """From the repository's model_index.json (cache first, then the hub unless offline): fine-tunes such as
    SG161222/RealVisXL_V4.0 or segmind/SSD-1B do not say their family in their name. The name decides only
    when model_index.json cannot be had."""
    try:
        index = hub_call(lambda **kw: _hub_file(repo_id, "model_index.json", **kw), repo_id, ["model_index.json"], "Model")
        found = _family_of_pipeline_class(json.loads(Path(index).read_text()).get("_class_name", ""))
    except (ModelNotFoundError, ValueError):  # unreachable, no model_index.json, or not JSON
        found = None
    if found:
        return found
    log.info("family of %s guessed from its name (its model_index.json could not be read)", repo_id)
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
    """Load SD 1.5 components for `hf_key` in `dtype`, fuse the LoRA (LCM-LoRA by default) and pick the autoencoder."""
    if hf_key == "tiny":
        from .models.tiny import tiny_model_dir

        root = tiny_model_dir()
        hf_key = str(root / "sd15")
        lora_key = str(root / "lcm-lora") if lora_key == DEFAULT_LORA_KEY else lora_key
        taesd_key = str(root / "taesd") if taesd_key == DEFAULT_TAESD_KEY else taesd_key
    hf_key, notice = replace_removed_repo(str(hf_key))
    config = replace_removed_repo(config)[0] if config else None
    path = Path(os.path.expanduser(hf_key))
    check_pickle(path, allow_pickle)
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        parts = _load_single_file(path, config or DEFAULT_HF_KEY, use_tiny_vae, dtype)
    elif path.is_dir():
        parts = _load_folder(path, use_tiny_vae, dtype)
    elif is_local(hf_key):
        raise ModelNotFoundError(
            f"{hf_key!r} does not exist: expected a diffusers folder (with {', '.join(SD15_PARTS)}/) or a "
            "single .safetensors file. Check the path, pass a hub id, or set SEMDRAW_MODEL=tiny for the offline miniature."
        )
    else:
        parts = _load_parts(hf_key, use_tiny_vae, dtype)
    tokenizer, text_encoder, unet, vae, scheduler_config = parts
    if use_tiny_vae:
        vae = load_taesd(taesd_key)
    if lora_key:
        _fuse_lora(str(lora_key), tokenizer, text_encoder, unet, vae, scheduler_config, allow_pickle)
    to_device([text_encoder, unet, vae], device, dtype, "SD 1.5")
    return SD15Components(tokenizer, text_encoder, unet, vae, scheduler_config, notice)


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


def _load_folder(folder: Path, use_tiny_vae: bool, dtype: torch.dtype):
    missing = [f"{part}/" for part in SD15_PARTS if not (folder / part).is_dir() and not (part == "vae" and use_tiny_vae)]
    if missing:
        raise ModelNotFoundError(f"{folder} is not a complete diffusers SD 1.5 folder: missing {', '.join(missing)}")
    return _load_parts(str(folder), use_tiny_vae, dtype)


def _load_parts(source: str, use_tiny_vae: bool, dtype: torch.dtype):
    """The components of a diffusers folder or hub id, in `dtype`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    files = repo_files({part: stem for part, stem in SD15_PARTS.items() if not (part == "vae" and use_tiny_vae)}, dtype)
    unet = load_part(UNet2DConditionModel, source, "unet", files, dtype=dtype)
    tokenizer = load_part(CLIPTokenizer, source, "tokenizer", files)
    text_encoder = load_part(CLIPTextModel, source, "text_encoder", files, dtype=dtype)
    vae = None if use_tiny_vae else load_part(AutoencoderKL, source, "vae", files, dtype=dtype)
    return tokenizer, text_encoder, unet, vae, read_scheduler_config(source, DEFAULT_SCHEDULER_CONFIG, files)


def _hub_file(repo_id: str, filename: str, local_files_only: bool) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, local_files_only=local_files_only)


def _load_single_file(file: Path, config: str, use_tiny_vae: bool, dtype: torch.dtype):
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
    prefix = "cond_stage_model.transformer."
    text_state = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    # configs only, but the text encoder's weights too when the file has none
    files = ["unet/config.json", "tokenizer/*", "text_encoder/config.json"] + ([] if text_state else ["text_encoder/model.safetensors"])
    files += [] if use_tiny_vae else ["vae/config.json"]

    def from_config(load):
        if local:
            return load(local_files_only=True)
        return hub_call(load, config, files, "Config repository", option="config")

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
    scheduler_config = read_scheduler_config(config, DEFAULT_SCHEDULER_CONFIG, []) if local else dict(DEFAULT_SCHEDULER_CONFIG)
    return tokenizer, text_encoder, unet, vae, scheduler_config


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


def load_part(
    cls, source: str, subfolder: str, files: list[str], what: str = "Model", hint: str = "",
    dtype: torch.dtype | None = None, option: str = "hf_key", **kwargs,
):
    """One component (`cls.from_pretrained`) from a local diffusers folder or a hub id's `subfolder` ("": the root).

    A model (`dtype` given) is built in `dtype`; in float16 its `fp16` variant files are preferred (half the
    download and memory), and the plain files read when the repository or folder has none (most fine-tunes),
    cast while loading."""
    if dtype is not None:
        kwargs["torch_dtype"] = dtype  # both libraries' name for it in every supported version

    def load(path, **kw):
        if dtype == torch.float16:
            try:
                # diffusers logs a missing variant as an ERROR before raising; safetensors only, or an fp16
                # pickle (.bin) would be read ahead of the plain .safetensors
                with diffusers_quiet(logging.CRITICAL):
                    return cls.from_pretrained(path, variant="fp16", use_safetensors=True, **kwargs, **kw)
            except (OSError, ValueError) as error:
                if kw.get("local_files_only") is False and _mark_if_unreachable(error):
                    raise  # the plain files would wait out the same retries
        return cls.from_pretrained(path, **kwargs, **kw)

    folder = Path(os.path.expanduser(source))
    if folder.is_dir():
        if not (folder / subfolder).is_dir():
            raise ModelNotFoundError(f"{folder} is not a complete diffusers folder: missing {subfolder}/")
        return load(folder / subfolder)
    where = {"subfolder": subfolder} if subfolder else {}
    return hub_call(lambda **kw: load(source, **where, **kw), source, files, what, hint, option)


def read_scheduler_config(source: str, defaults: dict, files: list[str], hint: str = "") -> dict:
    """scheduler/scheduler_config.json of a folder or hub id over `defaults` (just `defaults` if a folder has none)."""
    folder = Path(os.path.expanduser(source))
    if folder.is_dir():
        file = folder / "scheduler" / "scheduler_config.json"
        return {**defaults, **json.loads(file.read_text())} if file.is_file() else dict(defaults)
    cached = hub_call(lambda **kw: _hub_file(source, "scheduler/scheduler_config.json", **kw), source, files, "Model", hint)
    return {**defaults, **json.loads(Path(cached).read_text())}


def local_file(key: str, default_weight_name: str, what: str, hint: str = "", option: str = "lora_key") -> Path:
    """A weights file named by a local file, a folder (holding `default_weight_name`, or a single
    .safetensors file), a hub id (its `default_weight_name`) or "owner/repo/file.safetensors" (that file
    of a hub repository)."""
    path = Path(os.path.expanduser(key))
    if path.is_file():
        return path
    if path.is_dir():
        candidates = [path / default_weight_name] if (path / default_weight_name).is_file() else sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise ModelNotFoundError(
                f"{what} folder {key!r} has no {default_weight_name} (nor a single .safetensors file): pass the file itself as {option}"
            )
        return candidates[0]
    parts = key.split("/")
    if not key.startswith((".", "/", "~")) and len(parts) >= 3:
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    elif is_local(key):
        raise ModelNotFoundError(
            f"{what} {key!r} (given as {option}) does not exist: expected a folder with {default_weight_name}, a "
            ".safetensors file, a hub id or owner/repo/file.safetensors"
        )
    else:
        repo_id, filename = key, default_weight_name
    return Path(hub_call(lambda **kw: _hub_file(repo_id, filename, **kw), repo_id, [filename], what, hint, option))


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


def read_lora(lora_key: str, family: str, suggestion: str, allow_pickle: bool = False, hint: str = "") -> dict[str, torch.Tensor]:
    """A LoRA's state dict (file, folder, hub id or "owner/repo/file"), checked against the family. A pickled
    LoRA (.bin, .pt) is read only with `allow_pickle=True`, and then as tensors only (torch's weights_only)."""
    file = local_file(lora_key, LORA_WEIGHT_NAME, "LoRA", hint)
    check_pickle(file, allow_pickle, "LoRA")
    if file.suffix in PICKLE_SUFFIXES:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    else:
        state = load_safetensors(file, "LoRA")
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
        raise ModelNotFoundError(
            f"TAESD folder {key!r} (given as taesd_key) does not exist: expected a folder with config.json and "
            "diffusion_pytorch_model.safetensors, or a hub id"
        )
    files = ["config.json", "diffusion_pytorch_model.safetensors"]
    return hub_call(lambda **kw: load(key, **kw), key, files, "TAESD", option="taesd_key")


def _fuse_lora(lora_key: str, tokenizer, text_encoder, unet, vae, scheduler_config: dict, allow_pickle: bool = False) -> None:
    """Load a LoRA (hub id, folder or file) through diffusers and fuse it into the weights for good."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    state = read_lora(lora_key, "sd15", DEFAULT_LORA_KEY, allow_pickle)
    shell = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=LCMScheduler.from_config(scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    fuse_lora_into(shell, state, lora_key)


_QUIET_LOCK = threading.RLock()  # re-entrant: quiet sections nest


@contextlib.contextmanager
def diffusers_quiet(level: int = logging.ERROR):
    """Silence diffusers' messages below `level` for a moment: warnings this module has already checked for
    (a UNet-only LoRA has no text-encoder keys: read_lora checked its family; unmatched LoRA layers:
    fuse_lora_into counts them) or that do not apply."""
    from diffusers.utils import logging as diffusers_logging

    # The verbosity is global: two loads at once (threads) must not restore each other's quiet level for good.
    with _QUIET_LOCK:
        previous = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity(level)
        try:
            yield
        finally:
            diffusers_logging.set_verbosity(previous)


LORA_DOWN_KEY = re.compile(r"(lora_down|lora_A|lora\.down)\.weight$")  # one per adapted layer, in every LoRA layout


def fuse_lora_into(shell, state: dict[str, torch.Tensor], lora_key: str) -> None:
    """Load a LoRA state dict through a diffusers pipeline shell and fuse it into the weights for good.

    A LoRA whose layer names partly fit nothing in the model would be applied in part and silently (diffusers
    logs the unmatched keys, among warnings that do not matter here): count the layers that took it, and
    warn when some did not."""
    wanted = sum(1 for key in state if LORA_DOWN_KEY.search(key))
    with diffusers_quiet():
        shell.load_lora_weights(state, adapter_name="accelerator")
    modules = [m for m in shell.components.values() if isinstance(m, torch.nn.Module)]
    adapted = sum(
        1 for module in modules for layer in module.modules()
        if isinstance(getattr(layer, "lora_A", None), torch.nn.ModuleDict) and "accelerator" in layer.lora_A
    )
    if adapted < wanted:
        warnings.warn(
            f"LoRA {lora_key!r}: {wanted - adapted} of its {wanted} layers match no layer of this model and were "
            "skipped, so it is applied only in part. Check that it is made for this model and saved in a layout "
            "diffusers reads (kohya or diffusers), or pass lora_key=None to load the model without it.",
            stacklevel=2,
        )
    shell.fuse_lora(lora_scale=1.0)
    shell.unload_lora_weights()
