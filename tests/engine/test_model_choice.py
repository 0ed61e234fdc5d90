"""Which model a notebook gets (`load_pipeline`, SEMDRAW_MODEL) and the notices that say so, without loading
a model: the pipeline class is replaced by one that records what it was asked for."""

import types

import pytest
import torch

from semdraw_widget import engine
from semdraw_widget.engine.models.choice import configured_model, load_pipeline, pipeline_notice
from semdraw_widget.engine.models.sd15 import DEFAULT_HF_KEY


@pytest.fixture
def made(monkeypatch):
    """What each pipeline was made with: (device, keywords). Loading the default hub model fails, as offline."""
    calls = []

    def pipeline(device, **kwargs):
        if kwargs["hf_key"] == DEFAULT_HF_KEY:
            raise OSError("not in the Hugging Face cache")
        calls.append((device, kwargs))
        return types.SimpleNamespace()

    monkeypatch.setattr(engine, "StreamMultiDiffusion", pipeline)
    monkeypatch.delenv("SEMDRAW_MODEL", raising=False)
    return calls


def test_SEMDRAW_MODEL_is_read_in_one_place(monkeypatch):
    monkeypatch.delenv("SEMDRAW_MODEL", raising=False)
    assert configured_model() is None
    monkeypatch.setenv("SEMDRAW_MODEL", "")
    assert configured_model() is None
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny-3")
    assert configured_model() == "tiny-3"
    assert engine.load_model(lora_key=None).name == "sd3"  # hf_key=None: the environment's model


def test_auto_without_a_gpu_is_the_demo_model_and_says_why(made, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pipeline = load_pipeline(None, width=64, height=64)
    assert made == [("cpu", {"hf_key": "demo", "width": 64, "height": 64})]
    assert pipeline.notice.startswith("Demo model") and f"SEMDRAW_MODEL={DEFAULT_HF_KEY}" in pipeline.notice
    assert pipeline.notice.endswith("Using it because no CUDA GPU is visible to this kernel.")


def test_auto_on_a_gpu_falls_back_with_the_reason_the_default_failed(made, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pipeline = load_pipeline("auto", width=64, height=64)
    assert made == [("cpu", {"hf_key": "demo", "width": 64, "height": 64, "compile": True})]
    assert f"{DEFAULT_HF_KEY} could not be loaded (OSError: not in the Hugging Face cache)" in pipeline.notice


def test_a_model_named_by_the_environment_replaces_the_one_asked_for_and_says_so(made, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny-xl")
    pipeline = load_pipeline("someone/model", width=64, height=64)
    assert made[-1][1]["hf_key"] == "tiny-xl"
    assert "Tiny model" in pipeline.notice and "SEMDRAW_MODEL=tiny-xl replaces the model asked for (someone/model)" in pipeline.notice
    monkeypatch.delenv("SEMDRAW_MODEL")
    assert load_pipeline("someone/model", width=64, height=64).notice == ""  # a model asked for: nothing to say


def test_the_banner_joins_how_a_model_was_chosen_and_what_its_loader_said():
    model = types.SimpleNamespace(notice="'runwayml/stable-diffusion-v1-5' was removed from the hub")
    chosen = types.SimpleNamespace(notice="Tiny model.", model=model)
    assert pipeline_notice(chosen) == "Tiny model. 'runwayml/stable-diffusion-v1-5' was removed from the hub"
    assert pipeline_notice(types.SimpleNamespace(notice="Same.", model=types.SimpleNamespace(notice="Same."))) == "Same."
    assert pipeline_notice(object()) == ""
