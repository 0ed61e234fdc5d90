"""Region diffusion engine: StreamMultiDiffusion (streaming) and StableMultiDiffusionPipeline (one-shot).

No widget code here; importing this package needs torch, diffusers and transformers only.
"""

from .loading import ModelNotFoundError, UnsafeCheckpointError
from .models import load_model
from .models.choice import load_pipeline
from .models.detection import detect_family
from .models.options import LoadOptions
from .oneshot import StableMultiDiffusionPipeline, tile_weights
from .seed_classes import (
    StableMultiDiffusion3Pipeline,
    StableMultiDiffusionKolorsPipeline,
    StableMultiDiffusionSDXLPipeline,
    StreamMultiDiffusion3,
    StreamMultiDiffusionSDXL,
)
from .stream import StreamMultiDiffusion

__all__ = [
    "LoadOptions",
    "ModelNotFoundError",
    "StableMultiDiffusion3Pipeline",
    "StableMultiDiffusionKolorsPipeline",
    "StableMultiDiffusionPipeline",
    "StableMultiDiffusionSDXLPipeline",
    "StreamMultiDiffusion",
    "StreamMultiDiffusion3",
    "StreamMultiDiffusionSDXL",
    "UnsafeCheckpointError",
    "detect_family",
    "load_model",
    "load_pipeline",
    "tile_weights",
]
