"""Random-weight models of the real architectures, built on the device, so benchmarks need no downloads.

Compute cost does not depend on the weight values, so these give the real costs of the real models
(the images are noise). `--arch tiny` loads the package's CPU miniature instead (`hf_key="tiny"`), and
`--arch demo` its trained CPU demo model (`hf_key="demo"`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

# SD 1.5 (runwayml / stable-diffusion-v1-5 unet/config.json)
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)
# CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14 text_config)
CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# TAESD (madebyollin/taesd config.json)
TAESD = dict(
    encoder_block_out_channels=(64, 64, 64, 64),
    decoder_block_out_channels=(64, 64, 64, 64),
    num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1),
    latent_channels=4,
    act_fn="relu",
    upsample_fn="nearest",
    upsampling_scaling_factor=2,
    latent_magnitude=3,
    latent_shift=0.5,
    scaling_factor=1.0,
)

# SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0: unet, text_encoder_2); TAESDXL = the TAESD layout
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    act_fn="silu",
)
CLIP_BIGG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)

ARCHS = ("tiny", "demo", "sd15", "sdxl", "sd3")
BUILTIN = ("tiny", "demo")  # the package's own models: loaded, not built


class NotAvailable(RuntimeError):
    """An architecture this module has no random-weight builder for."""


def build(arch: str, device: torch.device, dtype: torch.dtype):
    """The family adapter of `arch` with random weights (tiny: the package's miniature; demo: its trained demo model)."""
    if arch in BUILTIN:
        from semdraw_widget.engine import load_model

        return load_model(arch, device=device, dtype=dtype)
    builders = {"sd15": _sd15, "sdxl": _sdxl}
    if arch not in builders:
        raise NotAvailable(f"--arch {arch}: the {arch} adapter exists, but its random-weight builder is not written yet")
    return builders[arch](device, dtype)


def _tokenizer(name: str):
    from semdraw_widget.engine.models.tiny import _write_tokenizer

    return _write_tokenizer(Path(tempfile.mkdtemp(prefix="semdraw-bench-")) / name)


def _clip(cls, tokenizer, config: dict):
    from transformers import CLIPTextConfig

    return cls(CLIPTextConfig(
        vocab_size=max(len(tokenizer), 49408), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **config,
    ))


def _sdxl(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from semdraw_widget.engine.loading import to_device
    from semdraw_widget.engine.models.sdxl import SDXL, SDXLComponents
    from semdraw_widget.engine.schedulers import DEFAULT_SCHEDULER_CONFIG

    tokenizer, tokenizer_2 = _tokenizer("tokenizer"), _tokenizer("tokenizer_2")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET)
        text_encoder = _clip(CLIPTextModel, tokenizer, CLIP_L)
        text_encoder_2 = _clip(CLIPTextModelWithProjection, tokenizer_2, CLIP_BIGG)
        vae = AutoencoderTiny(**TAESD)
    to_device([unet, text_encoder, text_encoder_2, vae], device, dtype, "SDXL")
    components = SDXLComponents(tokenizer, tokenizer_2, text_encoder, text_encoder_2, unet, vae, dict(DEFAULT_SCHEDULER_CONFIG))
    return SDXL(components, device, dtype)


def _sd15(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel

    from semdraw_widget.engine.loading import to_device
    from semdraw_widget.engine.models.sd15 import SD15, SD15Components
    from semdraw_widget.engine.schedulers import DEFAULT_SCHEDULER_CONFIG

    tokenizer = _tokenizer("tokenizer")
    torch.manual_seed(0)
    with torch.device(device):  # initialise where the weights will live: seconds, not minutes
        unet = UNet2DConditionModel(**SD15_UNET)
        text_encoder = _clip(CLIPTextModel, tokenizer, CLIP_L)
        vae = AutoencoderTiny(**TAESD)
    to_device([unet, text_encoder, vae], device, dtype, "SD 1.5")
    components = SD15Components(tokenizer, text_encoder, unet, vae, dict(DEFAULT_SCHEDULER_CONFIG))
    return SD15(components, device, dtype)
