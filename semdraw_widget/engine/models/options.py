"""`LoadOptions`: how a model is loaded, one set of options for the three families, checked once when made.

An option that would be ignored is refused here too: another family's option (`check_family`), and any
loading option beside a model loaded already (`check_loaded`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any

from .detection import FAMILY_TITLES, family_name

# The options only one family has: given (not None) for a model of another family, they would be ignored.
FAMILY_OPTIONS = {"unet_key": "sdxl", "vae_key": "sdxl", "use_t5": "sd3"}
# The options that name a hub id, a folder or a file (a path-like is taken as its string).
KEY_OPTIONS = ("lora_key", "taesd_key", "config", "unet_key", "vae_key")


@dataclass(frozen=True)
class LoadOptions:
    """How a family model is loaded; which checkpoint is `hf_key`, given beside them (see `load_model`).

    - `lora_key`: True fuses the model's own accelerating LoRA (LCM-LoRA, the SDXL-Lightning 4-step LoRA,
      Flash-SD3; nothing for a model that needs none); a hub id, folder, file or "owner/repo/file.safetensors"
      fuses that LoRA; None or False fuses none.
    - `use_tiny_vae`: decode with the tiny autoencoder (TAESD, TAESDXL, TAESD3) instead of the model's own VAE.
    - `taesd_key`: that tiny autoencoder (a hub id or folder); None: the model's own.
    - `config`: where a single-file checkpoint's configs and tokenizers come from (a hub id or diffusers
      folder); None: the family's default model.
    - `allow_pickle`: open pickled checkpoints and LoRAs (.ckpt, .bin, .pt), which can run code hidden in them.
    - `unet_key` (SDXL): a UNet file used instead of the model's; "lightning" is SDXL-Lightning's distilled
      UNet, and then no LoRA is fused unless one is named.
    - `vae_key` (SDXL, with `use_tiny_vae=False`): the VAE to decode with, e.g. "madebyollin/sdxl-vae-fp16-fix".
    - `use_t5` (SD3): load the T5 text encoder too (about 9 GB more); None (not given) or False leaves it out.
    - `lora_weight`: how much of the LoRA is fused (1: all of it; the seed project's SDXL and SD3 option).
    """

    lora_key: str | bool | None = True
    use_tiny_vae: bool = True
    taesd_key: str | None = None
    config: str | None = None
    allow_pickle: bool = False
    unet_key: str | None = None
    vae_key: str | None = None
    use_t5: bool | None = None
    lora_weight: float = 1.0

    def __post_init__(self) -> None:
        weight = self.lora_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise TypeError(f"lora_weight must be a finite number (got {weight!r}); 1.0 fuses the whole LoRA")
        for name in ("use_tiny_vae", "allow_pickle", "use_t5"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "use_t5" and value is None):
                raise TypeError(f"{name} must be True or False (got {value!r})")
        for name in KEY_OPTIONS:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not (value is None or isinstance(value, str) or (name == "lora_key" and isinstance(value, bool))):
                what = "a hub id, a folder or a file, True (the model's own) or None" if name == "lora_key" else "a hub id, a folder or a file, or None"
                raise TypeError(f"{name} must be {what} (got {value!r})")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any], caller: str) -> "LoadOptions":
        """The options given to `caller` as keywords; a keyword that is none of them is refused as Python would."""
        unknown = [name for name in keywords if name not in cls.names()]
        if unknown:
            raise TypeError(
                f"{caller}() got an unexpected keyword argument {unknown[0]!r} (its loading options are "
                f"{', '.join(cls.names())})"
            )
        return cls(**keywords)

    def given(self) -> list[str]:
        """The options not at their defaults, in the order above."""
        return [field.name for field in fields(self) if getattr(self, field.name) != field.default]

    def check_family(self, family: str, model: str) -> None:
        """Refuse what loading a `family` model (`model` names it in messages) would ignore: another family's
        options, and a VAE that would not decode."""
        for option, owner in FAMILY_OPTIONS.items():
            if getattr(self, option) is not None and owner != family:
                raise ValueError(
                    f"{option} is an option of {FAMILY_TITLES[owner]} models, but {model} is {FAMILY_TITLES[family]}: "
                    f"leave {option} out, or load an {FAMILY_TITLES[owner]} model (sd_version=...)"
                )
        if self.vae_key and self.use_tiny_vae:  # checked before anything loads: the VAE would be left unused
            raise ValueError(
                "vae_key takes effect with use_tiny_vae=False (by default TAESDXL decodes and no VAE is loaded): pass both"
            )

    def check_loaded(self, family: str, hf_key: str | None, sd_version: str | None) -> None:
        """Refuse what choosing a model would mean beside a `family` model loaded already: it would be ignored."""
        given = self.given() + (["hf_key"] if hf_key is not None else [])
        if sd_version is not None and family_name(sd_version) != family:
            given.append(f"sd_version={sd_version!r} (the model is {FAMILY_TITLES[family]})")
        if given:
            raise ValueError(
                f"model= is loaded already, so these loading options would be ignored: {', '.join(given)}. Pass them "
                "to load_model(...) instead, or leave model out"
            )
