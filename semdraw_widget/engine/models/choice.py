"""Which model a notebook gets, and saying so: `load_pipeline` and the notices the widget's banner shows.

The environment variable SEMDRAW_MODEL names a model for the whole process (CI runs everything on
"tiny"); `configured_model` is the one place it is read. "auto" is SD 1.5 on a CUDA GPU, and a built-in
model where that cannot be had -- never silently: the pipeline's `notice` says why.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .sd15 import DEFAULT_HF_KEY
from .sources import builtin_model

log = logging.getLogger("semdraw_widget")
MODEL_VARIABLE = "SEMDRAW_MODEL"
FALLBACK_MODEL = "demo"  # what "auto" loads where the default model cannot be had: it runs on any CPU and paints its words


def configured_model() -> str | None:
    """The model SEMDRAW_MODEL names (a hub id, folder, file or built-in key), or None when it is unset or empty."""
    return os.environ.get(MODEL_VARIABLE) or None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def builtin_notice(key: str) -> str:
    """What the banner says about a built-in model ("" for any other model)."""
    builtin = builtin_model(key)
    return builtin.notice.format(hub=DEFAULT_HF_KEY) if builtin is not None else ""


def load_pipeline(model: str | None = None, device: Any = None, width: int = 512, height: int = 512, **kwargs: Any):
    """Load the streaming pipeline the notebook asks for, and say plainly what was loaded.

    ``model``: a hub id, a local diffusers folder, a ``.safetensors`` file, ``"demo"``, ``"tiny"``, or None/"auto".
    ``SEMDRAW_MODEL`` in the environment overrides it, and the notice says so. "auto" means SD 1.5 + LCM-LoRA + TAESD on a CUDA
    GPU, and the demo model (trained here; it paints its few words) where that cannot be had (no GPU, no weights) -- never silently: the
    returned pipeline's ``notice`` says why, and the canvas shows it as a banner. A model asked for by
    name that cannot be loaded raises. On CUDA the pipeline replays the model from CUDA graphs
    (``compile=True``) unless ``compile=`` says otherwise.
    """
    import torch

    from .. import StreamMultiDiffusion

    forced = configured_model()
    choice = forced or model or "auto"
    # The environment forces the choice (CI runs the notebooks on the tiny model), but never silently.
    overridden = f"{MODEL_VARIABLE}={forced} replaces the model asked for ({model})." if forced and model not in (None, "auto", forced) else ""
    if overridden:
        log.warning(overridden)
    if str(device or default_device()).startswith("cuda"):
        kwargs.setdefault("compile", True)  # CUDA graphs: exact, under a second to capture per layer count
    if choice != "auto":
        pipeline = StreamMultiDiffusion(device or default_device(), hf_key=choice, width=width, height=height, **kwargs)
        pipeline.notice = " ".join(part for part in (builtin_notice(choice), overridden) if part)
        return pipeline
    reason = "no CUDA GPU is visible to this kernel"
    if torch.cuda.is_available():
        try:
            pipeline = StreamMultiDiffusion(device or "cuda", hf_key=DEFAULT_HF_KEY, width=width, height=height, **kwargs)
            pipeline.notice = ""
            return pipeline
        except Exception as exc:  # weights missing, hub unreachable, out of memory: say which, fall back
            reason = f"{DEFAULT_HF_KEY} could not be loaded ({type(exc).__name__}: {exc})"
    pipeline = StreamMultiDiffusion(device or "cpu", hf_key=FALLBACK_MODEL, width=width, height=height, **kwargs)
    pipeline.notice = f"{builtin_notice(FALLBACK_MODEL)} Using it because {reason}."
    return pipeline


def pipeline_notice(pipeline: Any) -> str:
    """What the widget's banner says about a pipeline: how it was chosen (`load_pipeline`) and what its model
    loader has to say (e.g. a removed hub repository read from its maintained copy)."""
    model = getattr(pipeline, "model", None)
    parts = (getattr(pipeline, "notice", ""), getattr(model, "notice", ""))
    return " ".join(dict.fromkeys(part for part in parts if part))
