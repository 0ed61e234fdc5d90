"""Which family a checkpoint belongs to, and what the families are called.

`detect_family` tells SD 1.5, SDXL and SD3 apart from the checkpoint itself: a built-in key's entry
(`sources.BUILTIN_MODELS`), a folder's `model_index.json` or subfolders, a single file's key names, a hub
repository's `model_index.json` (from the cache, or the hub unless offline), and only then the name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from .. import loading
from .sources import BUILTIN_MODELS

log = logging.getLogger("semdraw_widget")
FAMILY_TITLES = {"sd15": "SD 1.5", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD3"}
# sd_version spellings (the seed project's "1.5" / "xl" / "3") and family names.
FAMILY_ALIASES = {"1.5": "sd15", "sd15": "sd15", "xl": "sdxl", "sdxl": "sdxl", "3": "sd3", "sd3": "sd3"}


def family_name(sd_version: str) -> str:
    """"1.5" / "xl" / "3" (the seed project's sd_version) or "sd15" / "sdxl" / "sd3" -> the family name."""
    name = FAMILY_ALIASES.get(str(sd_version).lower())
    if name is None:
        raise ValueError(f"unknown sd_version {sd_version!r}; use one of '1.5', 'xl', '3'")
    return name


def detect_family(hf_key: str) -> str:
    """The family of a checkpoint: "sd15", "sdxl" or "sd3" ("sd15" when nothing says otherwise)."""
    hf_key = str(hf_key)
    if hf_key in BUILTIN_MODELS:
        return BUILTIN_MODELS[hf_key].family
    path = Path(os.path.expanduser(hf_key))
    if path.is_dir():
        return _family_of_folder(path)
    if path.is_file():
        return _family_of_file(path)
    if loading.is_local(hf_key):
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

    with loading.reading_safetensors(file, "Checkpoint"), safe_open(str(file), framework="pt") as handle:
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
        index = loading.hub_call(lambda **kw: loading.hub_file(repo_id, "model_index.json", **kw), repo_id, ["model_index.json"], "Model")
        found = _family_of_pipeline_class(json.loads(Path(index).read_text()).get("_class_name", ""))
    except (loading.ModelNotFoundError, ValueError):  # unreachable, no model_index.json, or not JSON
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
