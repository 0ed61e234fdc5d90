"""LoRAs: reading one (file, folder or hub id), telling which family it was made for, fusing it for good.

A LoRA is read as a state dict first, so one made for another family is refused with a message naming the
family it was made for (`lora_family`), before any layer is touched. Fusing goes through a diffusers pipeline
shell of the family's components (each family builds its own shell), then the adapter is unloaded, so frames
run on plain weights. SD3's PEFT adapters (Flash-SD3) are merged through PEFT in `sd3.py`.
"""

from __future__ import annotations

import re
import warnings

import torch

from .. import loading
from .detection import FAMILY_TITLES

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what a LoRA folder or hub repository holds
LORA_DOWN_KEY = re.compile(r"(lora_down|lora_A|lora\.down)\.weight$")  # one per adapted layer, in every LoRA layout


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
    file = loading.local_file(lora_key, LORA_WEIGHT_NAME, "LoRA", hint)
    loading.check_pickle(file, allow_pickle, "LoRA")
    if file.suffix in loading.PICKLE_SUFFIXES:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    else:
        state = loading.load_safetensors(file, "LoRA")
    check_lora_family(state, family, lora_key, suggestion)
    return state


def fuse_lora_into(shell, state: dict[str, torch.Tensor], lora_key: str, weight: float) -> None:
    """Load a LoRA state dict through a diffusers pipeline shell and fuse `weight` of it into the weights for good.

    A LoRA whose layer names partly fit nothing in the model would be applied in part and silently (diffusers
    logs the unmatched keys, among warnings that do not matter here): count the layers that took it, and
    warn when some did not."""
    wanted = sum(1 for key in state if LORA_DOWN_KEY.search(key))
    with loading.diffusers_quiet():
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
    shell.fuse_lora(lora_scale=float(weight))
    shell.unload_lora_weights()
