"""Reading model files, whatever the family: hub ids through the cache, local folders, single files.

A component comes from
- a Hugging Face hub id, read through the hub cache and downloaded once when the hub is reachable
  (`hub_call`; when it cannot be had, `ModelNotFoundError` names the files and the `hf download` command),
- a local diffusers folder (`load_part`, `read_scheduler_config`),
- one weights file, local or on the hub (`local_file`, `load_safetensors`).
`.ckpt` files are pickles, which can run arbitrary code when opened: they are refused unless the
caller passes `allow_pickle=True` (`check_pickle`).

What each family reads, and how it puts the parts together, is in its module under `models/`
(`sd15.py`, `sdxl.py`, `sd3.py`); which family a checkpoint is, in `models/detection.py`; LoRAs, in
`models/lora.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("semdraw_widget")
# How each component of a diffusers repository is stored, for the files named in ModelNotFoundError:
# a model's weights-file stem (diffusers' or transformers' name), or None for a folder read whole.
DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS, SHARDED_WEIGHTS = "diffusion_pytorch_model", "model", "model-*"
CONFIG_ONLY = "config.json"  # a model built from its config, its weights coming from elsewhere
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


class ModelNotFoundError(FileNotFoundError):
    """Weights could not be found locally and could not be downloaded."""


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint (`.ckpt`) was given without `allow_pickle=True`."""


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
    "i2t_key": "give the background image its prompt (background_prompt= / update_background(image, prompt=...)), "
    "so nothing needs captioning; or has_i2t=False, and an image without a prompt gets none",
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


def hub_file(repo_id: str, filename: str, local_files_only: bool) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, local_files_only=local_files_only)


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


def read_json(source: str, filename: str, files: list[str], hint: str = "") -> dict | None:
    """The JSON file `filename` (e.g. "vae/config.json") of a folder or hub id; None when a folder has none."""
    folder = Path(os.path.expanduser(source))
    if folder.is_dir():
        file = folder / filename
        return json.loads(file.read_text()) if file.is_file() else None
    cached = hub_call(lambda **kw: hub_file(source, filename, **kw), source, files, "Model", hint)
    return json.loads(Path(cached).read_text())


def read_scheduler_config(source: str, defaults: dict, files: list[str], hint: str = "") -> dict:
    """scheduler/scheduler_config.json of a folder or hub id over `defaults` (just `defaults` if a folder has none)."""
    return {**defaults, **(read_json(source, "scheduler/scheduler_config.json", files, hint) or {})}


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
    return Path(hub_call(lambda **kw: hub_file(repo_id, filename, **kw), repo_id, [filename], what, hint, option))


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


_QUIET_LOCK = threading.RLock()  # re-entrant: quiet sections nest


@contextlib.contextmanager
def diffusers_quiet(level: int = logging.ERROR):
    """Silence diffusers' messages below `level` for a moment: warnings the caller has already checked for
    (a UNet-only LoRA has no text-encoder keys: `lora.read_lora` checked its family; unmatched LoRA layers:
    `lora.fuse_lora_into` counts them) or that do not apply."""
    from diffusers.utils import logging as diffusers_logging

    # The verbosity is global: two loads at once (threads) must not restore each other's quiet level for good.
    with _QUIET_LOCK:
        previous = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity(level)
        try:
            yield
        finally:
            diffusers_logging.set_verbosity(previous)
