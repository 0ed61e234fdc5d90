"""Region diffusion engine: StreamMultiDiffusion (streaming) and StableMultiDiffusionPipeline (one-shot).

No widget code here; importing this package needs torch, diffusers and transformers only.
"""

from .loading import ModelNotFoundError, UnsafeCheckpointError, detect_family
from .models import load_model
from .oneshot import StableMultiDiffusionPipeline, tile_weights
from .stream import StreamMultiDiffusion

__all__ = [
    "ModelNotFoundError",
    "StableMultiDiffusionPipeline",
    "StreamMultiDiffusion",
    "UnsafeCheckpointError",
    "detect_family",
    "load_model",
    "tile_weights",
]
