"""`hf_key="tiny"`, `"tiny-xl"`, `"tiny-3"`: random-weight miniatures of SD 1.5, SDXL and SD3, built offline.

Each miniature is written to disk in the same layouts as the real weights and then loaded back through
the families' own loaders (their entries in `sources.BUILTIN_MODELS` name the folders), so tests and CI
exercise the real loading path. Its images are noise by design.
Weights come from a fixed seed, so every process builds bit-identical files.

- SD 1.5 (`sd15/`): UNet, CLIP text encoder, byte-level CLIP tokenizer, KL VAE, scheduler config; a
  TAESD-shaped `AutoencoderTiny` (`taesd/`) and an LCM-LoRA-shaped kohya LoRA (`lcm-lora/`).
- SDXL (`sdxl/`): an SDXL-shaped UNet (first block without attention, deeper transformers after it,
  `addition_embed_type="text_time"`), CLIP-L-like `CLIPTextModel` + bigG-like
  `CLIPTextModelWithProjection`, two tokenizers, an fp16-overflowing-style KL VAE config
  (`force_upcast`), Euler scheduler config; `taesdxl/`, a Lightning-shaped kohya LoRA
  (`lightning-lora/sdxl_lightning_4step_lora.safetensors`) and a Lightning-style full UNet file
  (`lightning-unet/sdxl_lightning_4step_unet.safetensors`).
- SD3 (`sd3/`): `SD3Transformer2DModel` (joint attention, pooled projections, 16 latent channels), two
  CLIP text encoders with projection, a 16-channel KL VAE with shift, flow-matching scheduler config (shift 3);
  a 16-channel `taesd3/` and a Flash-shaped PEFT adapter (`flash-lora/`: adapter_config.json + weights).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch

SEED = 0
LORA_RANK = 4
_LOCK = threading.Lock()
_BUILT: dict[str, Path] = {}

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 16, 32, 32),
    layers_per_block=2,
    # No attention at the full latent resolution: a CPU frame at 512x512 stays fast (4096-token
    # self-attention would dominate), while the cross-attention blocks below still exercise the
    # prompt path and the LoRA.
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=2,
    norm_num_groups=8,
)
TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    projection_dim=32,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(8, 8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=64,
)
TAESD_CONFIG = dict(
    encoder_block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    num_encoder_blocks=(1, 1, 1, 1),
    num_decoder_blocks=(1, 1, 1, 1),
    latent_channels=4,
)
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}
XL_UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    cross_attention_dim=64,  # CLIP-L-like 32 + bigG-like 32, concatenated
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + the pooled embedding
    norm_num_groups=8,
)
XL_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}
SD3_TRANSFORMER_CONFIG = dict(
    sample_size=8,
    patch_size=2,
    in_channels=16,
    num_layers=2,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=64,  # the T5 width; CLIP-L-like 32 + CLIP-G-like 32 are zero-padded to it
    caption_projection_dim=16,
    pooled_projection_dim=64,
    out_channels=16,
    pos_embed_max_size=128,  # patches per side: canvases up to 2048 pixels, as the seed's SD3 examples need
)
SD3_SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
FLASH_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"]
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_TEXT_PREFIX = "cond_stage_model.transformer."


def tiny_model_dir(family: str = "sd15") -> Path:
    """The folder holding the miniatures (each family built once per process, in one fresh temporary folder)."""
    with _LOCK:
        if "root" not in _BUILT:
            _BUILT["root"] = Path(tempfile.mkdtemp(prefix="semdraw-tiny-"))
            # Loaded weights live in memory; the files are only needed while loading.
            atexit.register(shutil.rmtree, _BUILT["root"], ignore_errors=True)
        root = _BUILT["root"]
        if family not in _BUILT:
            from transformers.utils import logging as transformers_logging

            was_shown = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # writing a few kilobytes needs no progress bars
            try:
                {"sd15": _write_sd15, "sdxl": _write_sdxl, "sd3": _write_sd3}[family](root)
            finally:
                if was_shown:  # as it was: a caller that hid them (a canvas loading quietly) keeps them hidden
                    transformers_logging.enable_progress_bar()
            _BUILT[family] = root
        return root


def _write_sd15(root: Path) -> None:
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel

    base = root / "sd15"
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    unet.save_pretrained(base / "unet")
    tokenizer = _write_tokenizer(base / "tokenizer")
    CLIPTextModel(_text_config(tokenizer)).save_pretrained(base / "text_encoder")
    AutoencoderKL(**VAE_CONFIG).save_pretrained(base / "vae")
    _write_json(base / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(base / "model_index.json", {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    AutoencoderTiny(**TAESD_CONFIG).save_pretrained(root / "taesd")
    _write_kohya_lora(unet, root / "lcm-lora" / "pytorch_lora_weights.safetensors")


def _write_sdxl(root: Path) -> None:
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    base = root / "sdxl"
    torch.manual_seed(SEED + 10)
    unet = UNet2DConditionModel(**XL_UNET_CONFIG)
    unet.save_pretrained(base / "unet")
    tokenizer = _write_tokenizer(base / "tokenizer")
    _write_tokenizer(base / "tokenizer_2")
    CLIPTextModel(_text_config(tokenizer)).save_pretrained(base / "text_encoder")
    CLIPTextModelWithProjection(_text_config(tokenizer)).save_pretrained(base / "text_encoder_2")
    AutoencoderKL(**VAE_CONFIG, scaling_factor=0.13025, force_upcast=True).save_pretrained(base / "vae")
    _write_json(base / "scheduler" / "scheduler_config.json", XL_SCHEDULER_CONFIG)
    _write_json(base / "model_index.json", {
        "_class_name": "StableDiffusionXLPipeline",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    AutoencoderTiny(**TAESD_CONFIG).save_pretrained(root / "taesdxl")
    _write_kohya_lora(unet, root / "lightning-lora" / "sdxl_lightning_4step_lora.safetensors")
    generator = torch.Generator().manual_seed(SEED + 11)
    distilled = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in unet.state_dict().items()}
    (root / "lightning-unet").mkdir(parents=True)
    save_file(distilled, str(root / "lightning-unet" / "sdxl_lightning_4step_unet.safetensors"))


def _write_sd3(root: Path) -> None:
    from diffusers import AutoencoderKL, AutoencoderTiny, SD3Transformer2DModel
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPTextModelWithProjection

    base = root / "sd3"
    torch.manual_seed(SEED + 20)
    SD3Transformer2DModel(**SD3_TRANSFORMER_CONFIG).save_pretrained(base / "transformer")
    tokenizer = _write_tokenizer(base / "tokenizer")
    _write_tokenizer(base / "tokenizer_2")
    CLIPTextModelWithProjection(_text_config(tokenizer)).save_pretrained(base / "text_encoder")
    CLIPTextModelWithProjection(_text_config(tokenizer)).save_pretrained(base / "text_encoder_2")
    AutoencoderKL(
        **{**VAE_CONFIG, "latent_channels": 16}, scaling_factor=1.5305, shift_factor=0.0609,
        use_quant_conv=False, use_post_quant_conv=False,
    ).save_pretrained(base / "vae")
    _write_json(base / "scheduler" / "scheduler_config.json", SD3_SCHEDULER_CONFIG)
    _write_json(base / "model_index.json", {
        "_class_name": "StableDiffusion3Pipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_3": [None, None],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": [None, None],
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    AutoencoderTiny(**{**TAESD_CONFIG, "latent_channels": 16}, scaling_factor=1.5305, shift_factor=0.0609).save_pretrained(
        root / "taesd3"
    )
    # Flash-SD3 is a PEFT adapter on the transformer's attention projections; B is random here (PEFT starts it at 0).
    transformer = SD3Transformer2DModel.from_pretrained(base / "transformer")
    adapter = get_peft_model(transformer, LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=FLASH_TARGETS))
    generator = torch.Generator().manual_seed(SEED + 21)
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    adapter.save_pretrained(str(root / "flash-lora"))


def _text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG,
    )


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte gets a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def _write_tokenizer(folder: Path):
    """A byte-level CLIP tokenizer with no merges: one token per byte (plus its end-of-word form)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _write_kohya_lora(unet, path: Path) -> None:
    """A LoRA on the UNet's attention projections in the kohya layout (lora_unet_*.lora_down/up/alpha) of
    `latent-consistency/lcm-lora-sdv1-5` and `ByteDance/SDXL-Lightning`'s LoRA."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(SEED + 1)
    tensors = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".attn" not in name:
            continue
        key = "lora_unet_" + name.replace(".", "_")
        down = torch.randn(LORA_RANK, module.in_features, generator=generator) * 0.1
        up = torch.randn(module.out_features, LORA_RANK, generator=generator) * 0.1
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))
    path.parent.mkdir(parents=True)
    save_file(tensors, str(path))


def write_single_file(path: str | os.PathLike) -> Path:
    """Write the miniature's UNet and text encoder as one original-layout (LDM) `.safetensors` file.

    This is how single-file SD 1.5 checkpoints are laid out (`model.diffusion_model.*`,
    `cond_stage_model.transformer.text_model.*`, with the `position_ids` buffer many real files carry),
    whatever layout the installed transformers saves CLIPTextModel in (5.6 flattened it: `embeddings.*`);
    loading it back goes through diffusers' own converter.
    """
    from safetensors.torch import load_file, save_file

    base = tiny_model_dir() / "sd15"
    unet_state = load_file(str(base / "unet" / "diffusion_pytorch_model.safetensors"))
    text_state = load_file(str(base / "text_encoder" / "model.safetensors"))
    tensors = {LDM_UNET_PREFIX + k: v for k, v in _unet_to_ldm(unet_state).items()}
    tensors.update({f"{LDM_TEXT_PREFIX}text_model.{k.removeprefix('text_model.')}": v for k, v in text_state.items()})
    tensors[f"{LDM_TEXT_PREFIX}text_model.embeddings.position_ids"] = torch.arange(TEXT_CONFIG["max_position_embeddings"])[None]
    path = Path(path)
    save_file(tensors, str(path))
    return path


def _unet_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to the original LDM layout (minimal, SD 1.5 only)."""
    per_block = UNET_CONFIG["layers_per_block"]
    n_blocks = len(UNET_CONFIG["block_out_channels"])
    renames = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(n_blocks):
        for j in range(per_block):
            ldm = 1 + i * (per_block + 1) + j
            renames.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{ldm}.0."))
            renames.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{ldm}.1."))
        renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{1 + i * (per_block + 1) + per_block}.0.op."))
        has_attention = UNET_CONFIG["up_block_types"][i].startswith("CrossAttn")
        for j in range(per_block + 1):
            ldm = i * (per_block + 1) + j
            renames.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{ldm}.0."))
            renames.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{ldm}.1."))
        last = i * (per_block + 1) + per_block
        renames.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{last}.{2 if has_attention else 1}."))
    resnet_parts = [
        ("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for old_prefix, new_prefix in renames:
            if key.startswith(old_prefix):
                new = new_prefix + key[len(old_prefix):]
                if ".resnets." in old_prefix:
                    for a, b in resnet_parts:
                        new = new.replace(new_prefix + a, new_prefix + b)
                break
        else:
            raise KeyError(f"no LDM name for UNet parameter {key!r}")
        out[new] = value
    return out
