"""Shared fixtures for the engine tests: one tiny model per session, small canvases, fixed masks; the demo
model and its classifier."""

import pytest
import torch
from engine_helpers import SIZE


@pytest.fixture(scope="session")
def tiny():
    from semdraw_widget.engine import load_model

    torch.manual_seed(0)
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_dir():
    """The folder of the tiny models, saved once in the real layouts (diffusers folders, LoRAs, TAESD)."""
    from semdraw_widget.engine.models import tiny as tiny_module

    return tiny_module.tiny_model_dir()


@pytest.fixture
def make_stream(tiny):
    from semdraw_widget.engine import StreamMultiDiffusion

    def make(**kwargs):
        kwargs.setdefault("height", SIZE)
        kwargs.setdefault("width", SIZE)
        return StreamMultiDiffusion("cpu", model=tiny, **kwargs)

    return make


@pytest.fixture
def oneshot(tiny):
    from semdraw_widget.engine import StableMultiDiffusionPipeline

    return StableMultiDiffusionPipeline("cpu", model=tiny)


@pytest.fixture(scope="module")
def demo():
    """The shipped demo model (a module's tests share one)."""
    from semdraw_widget.engine import load_model

    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def classifier():
    """The demo model's colour / texture classifier, the oracle's eyes."""
    from semdraw_widget.engine.models.demo import WEIGHTS_DIR
    from semdraw_widget.engine.models.demo.classifier import Classifier

    return Classifier.load(WEIGHTS_DIR / "classifier.safetensors")
