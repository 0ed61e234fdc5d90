"""Where a model's parts come from when the loading options leave them to the defaults.

Each family names its default checkpoint, the LoRA that `lora_key=True` fuses and the tiny autoencoder
that `use_tiny_vae=True` decodes with (`Sources`, a family adapter's `default_sources`). A built-in model
key (`BUILTIN_MODELS`) brings sources of its own, local folders in place of those hub ids: the
random-weight miniatures `"tiny"`, `"tiny-xl"`, `"tiny-3"` are written to a temporary folder on first use
(`tiny.py`) and then loaded through the same code as any diffusers folder. A model shipped with the
package is one more entry whose root is a folder inside the package, and a folder written by the demo
model's train command loads like that entry (`builtin_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

TINY_NOTICE = (
    "Tiny model: random weights, so the images are noise-like by design. For real images run on a CUDA GPU "
    "with the weights in the Hugging Face cache (e.g. SEMDRAW_MODEL={hub}), a local folder or a .safetensors file."
)


@dataclass(frozen=True)
class Sources:
    """The parts a model is loaded from unless the loading options name others."""

    hf_key: str  # the checkpoint: a hub id, a diffusers folder or a single file
    lora_key: str | None  # what lora_key=True fuses; None: this model needs no LoRA
    taesd_key: str  # the tiny autoencoder of use_tiny_vae=True (a hub id or a folder)
    distilled_unet: str | None = None  # what SDXL's unet_key="lightning" swaps in

    def lora(self, lora_key: str | bool | None) -> str | None:
        """The LoRA to fuse for the option `lora_key`: True is this model's own (maybe none), None/False none."""
        return self.lora_key if lora_key is True else (lora_key or None)

    def taesd(self, taesd_key: str | None) -> str:
        """The tiny autoencoder for the option `taesd_key` (None: this model's own)."""
        return taesd_key or self.taesd_key


@dataclass(frozen=True)
class BuiltinModel:
    """A model named by a short key, its files in a local folder: the checkpoint and the parts its
    defaults name, each a path under `root()` ("" is the root itself)."""

    family: str
    root: Callable[[], Path]  # the folder holding its files (written on first use, or shipped)
    checkpoint: str  # its diffusers folder
    tiny_vae: str  # what use_tiny_vae=True decodes with (the checkpoint's own vae/ if it is a tiny one)
    lora: str | None = None  # what lora_key=True fuses; None: it needs no LoRA
    distilled_unet: str | None = None  # SDXL: what unet_key="lightning" swaps in
    notice: str = ""  # what the widget's banner says about it ({hub}: the default hub id)
    vocabulary: Callable[[], object] | None = None  # the words a model trained on a closed vocabulary knows

    def sources(self) -> Sources:
        root = self.root()

        def under(part: str | None) -> str | None:
            return None if part is None else str(root / part)

        return Sources(str(root / self.checkpoint), under(self.lora), str(root / self.tiny_vae), under(self.distilled_unet))


def _demo_root() -> Path:
    from .demo import WEIGHTS_DIR

    return WEIGHTS_DIR


def _demo_vocabulary():
    from .demo.vocabulary import VOCABULARY

    return VOCABULARY


def _demo_notice(trained_into: Path | None = None) -> str:
    from .demo.vocabulary import VOCABULARY

    which = "Demo model"
    if trained_into is not None:  # the notice is a format string ({hub}): the folder's own braces are escaped
        which += " trained into " + str(trained_into).replace("{", "{{").replace("}", "}}")
    return (
        f"{which}: a small model of this package, trained on a made-up world of colours and textures, so it paints "
        f"only what its words name ({VOCABULARY.description}). For real images run on a CUDA GPU with the weights in "
        "the Hugging Face cache (e.g. SEMDRAW_MODEL={hub}), a local folder or a .safetensors file."
    )


def _miniatures(family: str) -> Callable[[], Path]:
    def root() -> Path:
        from .tiny import tiny_model_dir

        return tiny_model_dir(family)

    return root


BUILTIN_MODELS = {
    "tiny": BuiltinModel("sd15", _miniatures("sd15"), "sd15", tiny_vae="taesd", lora="lcm-lora", notice=TINY_NOTICE),
    "tiny-xl": BuiltinModel(
        "sdxl", _miniatures("sdxl"), "sdxl", tiny_vae="taesdxl", lora="lightning-lora/sdxl_lightning_4step_lora.safetensors",
        distilled_unet="lightning-unet/sdxl_lightning_4step_unet.safetensors", notice=TINY_NOTICE,
    ),
    "tiny-3": BuiltinModel("sd3", _miniatures("sd3"), "sd3", tiny_vae="taesd3", lora="flash-lora", notice=TINY_NOTICE),
    # trained in this repository (demo/): its own tiny autoencoder is its vae/, and it needs no LoRA
    "demo": BuiltinModel("sd15", _demo_root, "", tiny_vae="vae", notice=_demo_notice(), vocabulary=_demo_vocabulary),
}
# "tiny" with an sd_version is that family's miniature (the seed's StreamMultiDiffusion(..., sd_version="xl") offline)
MINIATURES = {"sd15": "tiny", "sdxl": "tiny-xl", "sd3": "tiny-3"}


# what the demo model's train command writes beside a diffusers folder's own files (see demo/train.py)
TRAINED_DEMO_FILES = ("training.json", "classifier.safetensors")


def builtin_model(hf_key: str | None) -> BuiltinModel | None:
    """The built-in model `hf_key` names, or None. A folder written by the demo model's train command is one:
    like "demo" it decodes with its own tiny autoencoder, needs no LoRA and knows the demo's words (the
    family's defaults would fetch TAESD and LCM-LoRA from the hub to go with it)."""
    if hf_key is None:
        return None
    builtin = BUILTIN_MODELS.get(str(hf_key))
    if builtin is not None:
        return builtin
    folder = Path(str(hf_key)).expanduser()
    if (folder / "model_index.json").is_file() and all((folder / name).is_file() for name in TRAINED_DEMO_FILES):
        return replace(BUILTIN_MODELS["demo"], root=lambda: folder, notice=_demo_notice(trained_into=folder))
    return None


def sources_for(hf_key: str | None, family_defaults: Sources) -> Sources:
    """What a model named `hf_key` loads from: a built-in model's own sources (`builtin_model`), else the
    family's defaults with `hf_key` (when given) as the checkpoint."""
    if hf_key is None:
        return family_defaults
    builtin = builtin_model(hf_key)
    if builtin is not None:
        return builtin.sources()
    return replace(family_defaults, hf_key=str(hf_key))


def builtin_of_family(hf_key: str, family: str, sd_version: str) -> str:
    """The built-in key to load when the built-in `hf_key` is asked for as `family` (sd_version=...)."""
    if hf_key == "tiny":
        return MINIATURES[family]
    own = BUILTIN_MODELS[hf_key].family
    if own != family:
        raise ValueError(
            f"hf_key={hf_key!r} is a built-in {own} model, but sd_version={sd_version!r} asks for {family}: "
            f"leave sd_version out, or use hf_key={MINIATURES[family]!r}"
        )
    return hf_key
