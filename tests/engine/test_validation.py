"""Bad settings are refused with a message saying what is allowed, before anything changes."""

import math
import os

import pytest
import torch

from semdraw_widget.engine import StreamMultiDiffusion, load_model

from engine_helpers import APPLE, PEAR, run, scene

BAD_LAYER_SETTINGS = [
    ("prompt_strength", math.nan, "between 0 and 1"),
    ("prompt_strength", 5, "between 0 and 1"),
    ("mask_strength", -1, "between 0 and 1"),
    ("mask_strength", math.inf, "between 0 and 1"),
    ("mask_std", -3, "between 0 and 256"),
    ("mask_std", 1e6, "between 0 and 256"),  # would have made the next frame's blur allocate terabytes
    ("mask_std", "8", "between 0 and 256"),
]


@pytest.mark.parametrize("setting,value,allowed", BAD_LAYER_SETTINGS)
def test_a_rejected_layer_setting_leaves_the_stream_as_it_was(make_stream, setting, value, allowed):
    untouched, stream = scene(make_stream()), scene(make_stream())
    run(untouched, 2), run(stream, 2)
    with pytest.raises(ValueError, match=rf"^{setting} must be a number {allowed} \(got "):
        stream.update_single_layer(0, prompt="a blue plum", mask=PEAR, **{setting: value})  # an edit
    with pytest.raises(ValueError, match=setting):
        stream.update_single_layer(2, prompt="a blue plum", mask=PEAR, **{setting: value})  # an append
    with pytest.raises(ValueError, match=rf"^{setting}s must be"):
        stream.update_layers(["a blue plum", "a plum"], masks=[APPLE, PEAR], **{f"{setting}s": [0.5, value]})
    assert stream.num_layers == 2
    assert torch.equal(stream(output_type="latent"), untouched(output_type="latent"))
    assert stream.converged == untouched.converged


def test_settings_at_the_ends_of_their_ranges_are_accepted(make_stream):
    stream = make_stream()
    stream.update_single_layer(0, prompt="a red apple", mask=APPLE, prompt_strength=0, mask_strength=1, mask_std=256.0)
    stream.update_layers("a red apple", masks=[APPLE], prompt_strengths=1.0, mask_strengths=0.0, mask_stds=0)
    assert torch.isfinite(stream(output_type="latent")).all()


@pytest.mark.parametrize("setting", ["default_prompt_strength", "default_mask_strength", "default_mask_std"])
def test_bad_default_layer_settings_are_refused(make_stream, oneshot, setting):
    with pytest.raises(ValueError, match=rf"^{setting} must be a number between 0 and"):
        make_stream(**{setting: math.nan})
    with pytest.raises(ValueError, match=rf"^{setting} must be a number between 0 and"):
        type(oneshot)("cpu", model=oneshot.model, **{setting: -1.0})


@pytest.mark.parametrize("setting,value,allowed", BAD_LAYER_SETTINGS)
def test_one_shot_refuses_bad_layer_settings(oneshot, setting, value, allowed):
    with pytest.raises(ValueError, match=rf"^{setting}s must be a number {allowed} \(got "):
        oneshot("a red apple", masks=[APPLE], height=64, width=64, seed=1, output_type="latent", **{f"{setting}s": value})
    with pytest.raises(ValueError, match=rf"^{setting}s must be"):
        oneshot(["a red apple", "a pear"], masks=[APPLE, PEAR], height=64, width=64, seed=1, output_type="latent",
                **{f"{setting}s": [0.5, value]})


@pytest.mark.parametrize("seed", [2**80, 2**63, -1, 1.5, True, "7"])
def test_a_rejected_seed_leaves_the_stream_as_it_was(make_stream, oneshot, seed):
    untouched, stream = scene(make_stream(seed=5)), scene(make_stream(seed=5))
    run(untouched, 2), run(stream, 2)
    with pytest.raises(ValueError, match=r"seed must be a whole number from 0 to 2\*\*63 - 1"):
        stream.reset_seed(seed)
    assert stream.seed == 5
    assert torch.equal(stream(output_type="latent"), untouched(output_type="latent"))
    with pytest.raises(ValueError, match=r"seed must be a whole number"):
        make_stream(seed=seed)
    with pytest.raises(ValueError, match=r"seed must be a whole number"):
        oneshot.sample("a cat", height=64, width=64, seed=seed, output_type="latent")


def test_the_largest_seed_works(make_stream):
    stream = scene(make_stream())
    stream.reset_seed(2**63 - 1)
    assert stream.seed == 2**63 - 1 and torch.isfinite(stream(output_type="latent")).all()


@pytest.mark.parametrize("steps", [0, -2, 2.0, 1000, True])
def test_bad_num_inference_steps_are_refused_not_replaced_by_the_default(oneshot, steps):
    with pytest.raises(ValueError, match=r"num_inference_steps must be a whole number in 1\.\.50 \(got "):
        oneshot.sample("a cat", height=64, width=64, seed=1, num_inference_steps=steps, output_type="latent")


def test_num_inference_steps_none_is_the_default_and_one_is_one(oneshot):
    model = oneshot.model
    assert model.slots(None, None) == (model.schedule, model.default_t_index_list)
    one, slots = model.slots(None, 1)
    assert one.timesteps == [999] and slots == (0,)


@pytest.fixture
def corrupt_file(tmp_path):
    file = tmp_path / "downloaded.safetensors"
    file.write_bytes(os.urandom(4096))
    return file


def test_a_corrupt_checkpoint_file_is_named_in_the_error(corrupt_file):
    message = rf"Checkpoint '{corrupt_file}' is not a valid \.safetensors file .*Download it again"
    with pytest.raises(ValueError, match=message):
        load_model(str(corrupt_file), lora_key=None)
    with pytest.raises(ValueError, match=message):
        load_model(str(corrupt_file), family="1.5", lora_key=None)  # no family detection: the loader reads it


@pytest.mark.parametrize("hf_key", ["tiny", "tiny-xl", "tiny-3"])
def test_a_corrupt_lora_file_is_named_in_the_error(corrupt_file, hf_key):
    with pytest.raises(ValueError, match=rf"LoRA '{corrupt_file}' is not a valid \.safetensors file .*Download it again"):
        StreamMultiDiffusion("cpu", hf_key=hf_key, lora_key=str(corrupt_file), height=64, width=64)


def test_a_corrupt_sdxl_unet_file_is_named_in_the_error(corrupt_file):
    with pytest.raises(ValueError, match=rf"UNet '{corrupt_file}' is not a valid \.safetensors file"):
        load_model("tiny-xl", lora_key=None, unet_key=str(corrupt_file))
