"""LoadOptions (checked once, for the three families), the registry of built-in model keys, and an SD 1.5
folder whose vae/ is a tiny autoencoder (what a model trained to decode with TAESD ships)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from semdraw_widget.engine import LoadOptions, StreamMultiDiffusion, detect_family, load_model
from semdraw_widget.engine.models import FAMILIES, sources
from semdraw_widget.engine.models.choice import builtin_notice
from semdraw_widget.engine.models.sources import BUILTIN_MODELS, BuiltinModel, builtin_of_family, sources_for


# ---- LoadOptions ----------------------------------------------------------------------------------
def test_defaults_are_the_documented_ones_and_nothing_counts_as_given():
    options = LoadOptions()
    assert (options.lora_key, options.use_tiny_vae, options.allow_pickle, options.use_t5) == (True, True, False, None)
    assert options.given() == []
    assert LoadOptions(lora_key=None, use_tiny_vae=False, use_t5=False).given() == ["lora_key", "use_tiny_vae", "use_t5"]
    with pytest.raises(AttributeError):
        options.lora_key = None  # frozen: checked once, never changed after


@pytest.mark.parametrize("option,value,message", [
    ("use_tiny_vae", "no", "use_tiny_vae must be True or False"),
    ("allow_pickle", 1, "allow_pickle must be True or False"),
    ("use_t5", "yes", "use_t5 must be True or False"),
    ("lora_key", 3, "lora_key must be a hub id, a folder or a file, True"),
    ("taesd_key", True, "taesd_key must be a hub id, a folder or a file, or None"),
    ("config", ["a"], "config must be"),
])
def test_options_of_the_wrong_type_are_refused_when_made(option, value, message):
    with pytest.raises(TypeError, match=message):
        LoadOptions(**{option: value})


def test_paths_are_taken_as_their_strings(tmp_path):
    options = LoadOptions(lora_key=tmp_path / "lora", taesd_key=tmp_path / "taesd")
    assert options.lora_key == str(tmp_path / "lora") and options.taesd_key == str(tmp_path / "taesd")


def test_an_unknown_keyword_names_the_caller_and_the_options():
    with pytest.raises(TypeError, match=r"load_model\(\) got an unexpected keyword argument 'lora'.*lora_key, use_tiny_vae"):
        LoadOptions.from_keywords({"lora": None}, "load_model")
    with pytest.raises(TypeError, match="load_model.*'autoflush'"):
        load_model("tiny", autoflush=True)  # a seed-project keyword this engine does not have


def test_options_a_family_would_ignore_are_refused_before_anything_loads():
    with pytest.raises(ValueError, match=r"unet_key is an option of SDXL models, but 'x' is SD 1\.5"):
        LoadOptions(unet_key="lightning").check_family("sd15", "'x'")
    with pytest.raises(ValueError, match="use_t5 is an option of SD3 models, but the default model is SDXL"):
        LoadOptions(use_t5=False).check_family("sdxl", "the default model")  # given, even as False
    with pytest.raises(ValueError, match="vae_key takes effect with use_tiny_vae=False"):
        LoadOptions(vae_key="madebyollin/sdxl-vae-fp16-fix").check_family("sdxl", "'x'")
    LoadOptions(vae_key="madebyollin/sdxl-vae-fp16-fix", use_tiny_vae=False).check_family("sdxl", "'x'")
    LoadOptions(use_t5=True).check_family("sd3", "'x'")


def test_beside_a_loaded_model_every_loading_choice_is_refused():
    LoadOptions().check_loaded("sdxl", None, "xl")  # its own family: nothing is ignored
    with pytest.raises(ValueError, match=r"would be ignored: use_tiny_vae, allow_pickle, hf_key, sd_version='3' \(the model is SDXL\)"):
        LoadOptions(use_tiny_vae=False, allow_pickle=True).check_loaded("sdxl", "tiny", "3")


# ---- the built-in keys -------------------------------------------------------------------------------
def test_every_builtin_key_names_a_family_and_tiny_follows_sd_version():
    assert set(BUILTIN_MODELS) >= {"tiny", "tiny-xl", "tiny-3"}
    for key, entry in BUILTIN_MODELS.items():
        assert entry.family in FAMILIES and detect_family(key) == entry.family
    assert [builtin_of_family("tiny", family, "?") for family in ("sd15", "sdxl", "sd3")] == ["tiny", "tiny-xl", "tiny-3"]
    assert builtin_of_family("tiny-xl", "sdxl", "xl") == "tiny-xl"
    with pytest.raises(ValueError, match=r"hf_key='tiny-3' is a built-in sd3 model, but sd_version='xl' asks for sdxl"):
        builtin_of_family("tiny-3", "sdxl", "xl")


def test_a_builtin_key_brings_its_own_sources_and_any_other_key_the_familys(tiny_dir):
    family = FAMILIES["sd15"].default_sources
    own = sources_for("tiny", family)
    assert own.hf_key == str(tiny_dir / "sd15") and own.lora_key == str(tiny_dir / "lcm-lora")
    assert own.taesd_key == str(tiny_dir / "taesd")
    assert sources_for(None, family) == family
    named = sources_for("someone/model", family)
    assert named.hf_key == "someone/model" and (named.lora_key, named.taesd_key) == (family.lora_key, family.taesd_key)
    assert own.lora(True) == own.lora_key and own.lora(None) is None and own.lora(False) is None and own.lora("x") == "x"
    assert own.taesd(None) == own.taesd_key and own.taesd("y") == "y"


def test_a_folder_the_demo_train_command_wrote_is_a_demo_model_and_any_other_folder_is_not(tmp_path):
    family = FAMILIES["sd15"].default_sources
    trained = tmp_path / "runs {1}"  # braces: the notice is a format string
    trained.mkdir()
    for name in ("model_index.json", "training.json", "classifier.safetensors"):
        (trained / name).write_text("{}")
    own = sources_for(str(trained), family)
    assert own.hf_key == str(trained) and own.taesd_key == str(trained / "vae") and own.lora(True) is None
    assert builtin_notice(str(trained)).startswith(f"Demo model trained into {trained}: ")
    (trained / "training.json").unlink()  # a diffusers folder like any other: the family's defaults
    assert sources_for(str(trained), family) == replace(family, hf_key=str(trained))
    assert builtin_notice(str(trained)) == ""


@pytest.fixture(scope="module")
def tiny_vae_folder(tiny_dir, tmp_path_factory):
    """The tiny SD 1.5 folder with its vae/ replaced by an AutoencoderTiny, as a model trained to decode with
    TAESD ships (diffusers' own layout: the class is in vae/config.json and model_index.json)."""
    folder = tmp_path_factory.mktemp("tiny-vae") / "model"
    shutil.copytree(tiny_dir / "sd15", folder)
    shutil.rmtree(folder / "vae")
    shutil.copytree(tiny_dir / "taesd", folder / "vae")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderTiny"]}))
    return folder


def test_an_sd15_folder_whose_vae_is_a_tiny_autoencoder_loads_it(tiny_vae_folder):
    model = load_model(str(tiny_vae_folder), lora_key=None, use_tiny_vae=False)
    assert type(model.vae).__name__ == "AutoencoderTiny" and model.scaling_factor == 1.0
    stream = StreamMultiDiffusion(model, height=64, width=64)
    stream.update_single_layer(0, prompt="a cat", mask=torch.ones(64, 64))
    assert stream(output_type="np").shape == (64, 64, 3)


def test_a_vae_of_another_kind_is_named(tiny_vae_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_vae_folder, folder)
    config = json.loads((folder / "vae" / "config.json").read_text())
    (folder / "vae" / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderKLWan"}))
    with pytest.raises(ValueError, match="its vae/ is AutoencoderKLWan, but an SD 1.5 model decodes with AutoencoderKL or AutoencoderTiny"):
        load_model(str(folder), lora_key=None, use_tiny_vae=False)


def test_a_builtin_model_is_one_registry_entry(tiny_vae_folder, monkeypatch):
    """A shipped model whose defaults differ: no LoRA for lora_key=True, its own vae/ as the tiny autoencoder."""
    entry = BuiltinModel("sd15", lambda: Path(tiny_vae_folder), "", tiny_vae="vae", notice="Shipped model.")
    monkeypatch.setitem(sources.BUILTIN_MODELS, "shipped", entry)
    assert detect_family("shipped") == "sd15" and builtin_notice("shipped") == "Shipped model."
    unfused = load_model(str(tiny_vae_folder), lora_key=None, use_tiny_vae=False).unet.state_dict()
    for use_tiny_vae in (True, False):
        model = load_model("shipped", use_tiny_vae=use_tiny_vae)  # lora_key=True: this model's own, none
        assert type(model.vae).__name__ == "AutoencoderTiny"
        assert all(torch.equal(value, unfused[key]) for key, value in model.unet.state_dict().items())
    fused = load_model("tiny").unet.state_dict()  # the miniature's default LoRA is fused
    assert not all(torch.equal(value, unfused[key]) for key, value in fused.items())
    assert load_model("shipped", family="1.5").name == "sd15"
    with pytest.raises(ValueError, match="hf_key='shipped' is a built-in sd15 model"):
        load_model("shipped", family="xl")
