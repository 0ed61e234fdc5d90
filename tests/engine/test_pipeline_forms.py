"""How a pipeline gets its model: wired from a loaded one, `from_pretrained`, and the seed project's
keyword form; and what is refused because it would be ambiguous or ignored."""

import pytest
import torch

from semdraw_widget.engine import StableMultiDiffusionPipeline, StreamMultiDiffusion, load_model
from semdraw_widget.engine.blend import RegionScene
from semdraw_widget.limits import LAYER_SETTING_DEFAULTS

from engine_helpers import APPLE, SIZE, run


def first_frames(stream):
    stream.update_single_layer(0, prompt="a red apple", mask=APPLE)
    return run(stream, 2)


def test_a_pipeline_is_wired_from_a_loaded_model_as_it_is(tiny):
    stream = StreamMultiDiffusion(tiny, height=SIZE, width=SIZE)
    one_shot = StableMultiDiffusionPipeline(tiny)
    assert stream.model is tiny and one_shot.model is tiny  # shared, not loaded again
    assert (stream.device, stream.dtype) == (one_shot.device, one_shot.dtype) == (tiny.device, tiny.dtype)
    keyword = StreamMultiDiffusion("cpu", model=tiny, height=SIZE, width=SIZE)  # the model= form
    assert torch.equal(first_frames(stream), first_frames(keyword))


def test_from_pretrained_loads_with_the_options_given_and_keeps_the_pipeline_settings():
    stream = StreamMultiDiffusion.from_pretrained("tiny", device="cpu", lora_key=None, height=SIZE, width=SIZE, seed=3)
    bare = load_model("tiny", lora_key=None).unet.state_dict()
    assert all(torch.equal(value, bare[key]) for key, value in stream.model.unet.state_dict().items())
    assert (stream.height, stream.width, stream.seed, stream.device.type) == (SIZE, SIZE, 3, "cpu")
    one_shot = StableMultiDiffusionPipeline.from_pretrained("tiny", device="cpu", sd_version="xl", default_mask_std=2.0)
    assert one_shot.model.name == "sdxl" and one_shot.default_mask_std == 2.0


def test_the_seed_projects_keyword_form_loads():
    stream = StreamMultiDiffusion(device="cpu", hf_key="tiny", lora_key=None, use_tiny_vae=False, height=SIZE, width=SIZE)
    assert type(stream.model.vae).__name__ == "AutoencoderKL" and stream.device.type == "cpu"
    one_shot = StableMultiDiffusionPipeline(torch.device("cpu"), torch.float32, hf_key="tiny")  # device and dtype first
    assert one_shot.dtype == torch.float32 and one_shot.model.name == "sd15"


def test_arguments_that_are_ambiguous_or_would_be_ignored_are_refused(tiny):
    with pytest.raises(TypeError, match="got a model twice"):
        StreamMultiDiffusion(tiny, model=tiny)
    with pytest.raises(TypeError, match="got a device twice"):
        StableMultiDiffusionPipeline("cpu", device="cpu", model=tiny)
    with pytest.raises(TypeError, match=r"first argument is a loaded model \(load_model\(\.\.\.\)\) or a device"):
        StreamMultiDiffusion("tiny".encode())
    with pytest.raises(TypeError, match=r"StableMultiDiffusionPipeline\(\) got an unexpected keyword argument 'has_i2'"):
        StableMultiDiffusionPipeline(tiny, has_i2=False)
    with pytest.raises(ValueError, match="model= is loaded already, so these loading options would be ignored: lora_key, hf_key"):
        StreamMultiDiffusion(tiny, hf_key="tiny", lora_key=None)


def test_the_layer_defaults_are_one_set(tiny):
    stream, one_shot = StreamMultiDiffusion(tiny, height=SIZE, width=SIZE), StableMultiDiffusionPipeline(tiny)
    assert {setting: getattr(stream, f"default_{setting}") for setting in LAYER_SETTING_DEFAULTS} == LAYER_SETTING_DEFAULTS
    # the one-shot pipeline's are the seed project's one-shot defaults
    assert {setting: getattr(one_shot, f"default_{setting}") for setting in LAYER_SETTING_DEFAULTS} == dict.fromkeys(
        LAYER_SETTING_DEFAULTS, 1.0)
    layer = RegionScene(tiny, stream.steps, SIZE, SIZE).new_layer("a pear")
    assert (layer.prompt_strength, layer.mask_strength, layer.mask_std) == tuple(LAYER_SETTING_DEFAULTS.values())
