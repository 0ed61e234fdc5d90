import pytest
import torch

from semdraw_widget.engine import ModelNotFoundError, StreamMultiDiffusion, UnsafeCheckpointError, load_model
from semdraw_widget.engine.models import tiny as tiny_module


def weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_tiny_loads_from_a_diffusers_folder_and_fuses_the_lora(tiny, tiny_dir):
    folder = load_model(str(tiny_dir / "sd15"), lora_key=str(tiny_dir / "lcm-lora"), taesd_key=str(tiny_dir / "taesd"))
    for a, b in zip(folder.unet.state_dict().values(), tiny.unet.state_dict().values()):
        assert torch.equal(a, b)
    bare = load_model(str(tiny_dir / "sd15"), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    fused, plain = weights(folder.unet), weights(bare.unet)
    changed = [k for k in plain if not torch.equal(plain[k], fused[k])]
    assert changed and all(".attn" in k for k in changed)
    assert torch.equal(plain["conv_in.weight"], fused["conv_in.weight"])
    lora_file = tiny_dir / "lcm-lora" / "pytorch_lora_weights.safetensors"
    from_file = load_model(str(tiny_dir / "sd15"), lora_key=str(lora_file), taesd_key=str(tiny_dir / "taesd"))
    assert all(torch.equal(a, b) for a, b in zip(from_file.unet.state_dict().values(), fused.values()))


def test_tiny_loads_from_a_single_safetensors_file(tiny_dir, tmp_path):
    file = tiny_module.write_single_file(tmp_path / "tiny-sd15.safetensors")
    single = load_model(str(file), config=str(tiny_dir / "sd15"), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    folder = load_model(str(tiny_dir / "sd15"), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    for mine, theirs in ((single.unet, folder.unet), (single.text_encoder, folder.text_encoder)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_full_vae_option(tiny_dir):
    model = load_model(str(tiny_dir / "sd15"), lora_key=None, use_tiny_vae=False)
    assert type(model.vae).__name__ == "AutoencoderKL" and model.scaling_factor == pytest.approx(0.18215)
    stream = StreamMultiDiffusion("cpu", model=model, height=64, width=64)
    stream.update_single_layer(0, prompt="a cat", mask=torch.ones(64, 64))
    assert stream(output_type="np").shape == (64, 64, 3)


def test_hf_key_tiny_goes_through_the_real_loader():
    stream = StreamMultiDiffusion("cpu", hf_key="tiny", height=64, width=64)
    assert stream.dtype == torch.float32 and type(stream.model.vae).__name__ == "AutoencoderTiny"
    assert stream().size == (64, 64)


def test_missing_weights_offline_give_the_documented_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as error:
        load_model("semdraw-tests/no-such-model", lora_key=None)
    message = str(error.value)
    for expected in ("semdraw-tests/no-such-model", "unet/diffusion_pytorch_model.safetensors", "`hf download semdraw-tests/no-such-model ",
                     "huggingface-cli download", "SEMDRAW_MODEL=tiny"):
        assert expected in message
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"), lora_key=None)
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_model(str(tmp_path), lora_key=None)


def test_pickled_checkpoints_are_refused(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not even read")
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        load_model(str(checkpoint))


def test_an_explicit_hf_key_wins_over_SEMDRAW_MODEL(monkeypatch):
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny")  # the default choice only: what hf_key=None loads
    assert load_model("tiny-xl", lora_key=None).name == "sdxl"
    assert StreamMultiDiffusion("cpu", hf_key="tiny-xl", height=64, width=64).model.name == "sdxl"
    assert load_model(None, lora_key=None).name == "sd15"


def test_family_options_reach_the_loader_through_both_pipelines():
    from safetensors.torch import load_file

    from semdraw_widget import StableMultiDiffusionPipeline

    distilled = load_file(str(tiny_module.tiny_model_dir("sdxl") / "lightning-unet" / "sdxl_lightning_4step_unet.safetensors"))
    for pipeline in (StreamMultiDiffusion("cpu", hf_key="tiny-xl", unet_key="lightning", height=64, width=64),
                     StableMultiDiffusionPipeline("cpu", hf_key="tiny-xl", unet_key="lightning")):
        unet = pipeline.model.unet.state_dict()
        assert all(torch.equal(unet[k], distilled[k]) for k in distilled)
    with pytest.raises(ValueError, match="unet_key is an option of SDXL models.*SD 1.5"):
        StreamMultiDiffusion("cpu", hf_key="tiny", unet_key="lightning", height=64, width=64)
    with pytest.raises(ValueError, match="use_t5 is an option of SD3 models.*SDXL"):
        StableMultiDiffusionPipeline("cpu", hf_key="tiny-xl", use_t5=True)


def test_vae_key_and_family_options_that_would_be_ignored_say_so(tmp_path):
    from semdraw_widget import StableMultiDiffusionPipeline

    with pytest.raises(ValueError, match="vae_key takes effect with use_tiny_vae=False"):
        load_model("tiny-xl", vae_key="madebyollin/sdxl-vae-fp16-fix")
    single = tmp_path / "sdxl_vae.safetensors"
    single.write_bytes(b"")
    with pytest.raises(ValueError, match="vae_key .*sdxl_vae.safetensors' is a single file"):
        load_model("tiny-xl", vae_key=str(single), use_tiny_vae=False, lora_key=None)
    model = load_model("tiny-xl", lora_key=None)
    with pytest.raises(ValueError, match="model= is loaded already, so these loading options would be ignored: unet_key"):
        StableMultiDiffusionPipeline("cpu", model=model, unet_key="lightning")
    with pytest.raises(ValueError, match="ignored: hf_key, sd_version='1.5' \\(the model is SDXL\\)"):
        StreamMultiDiffusion("cpu", model=model, hf_key="tiny", sd_version="1.5", height=64, width=64)
    for option in ({"lora_key": None}, {"use_tiny_vae": False}, {"taesd_key": "madebyollin/taesdxl"}, {"allow_pickle": True}):
        with pytest.raises(ValueError, match=f"ignored: {next(iter(option))}"):
            StreamMultiDiffusion("cpu", model=model, height=64, width=64, **option)
    StreamMultiDiffusion("cpu", model=model, sd_version="xl", height=64, width=64)  # the model's own family: fine


def test_the_default_flash_lora_missing_names_its_peft_files(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from semdraw_widget.engine.models import sd3

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="adapter_config.json") as error:
        sd3._peft_folder(sd3.DEFAULT_SD3_LORA_KEY)
    assert "pytorch_lora_weights" not in str(error.value)


def _v_prediction_copy(tiny_dir, tmp_path):
    """The SD 1.5 miniature with its scheduler saying it predicts v (as SD 2.x-v checkpoints and the demo model do)."""
    import json
    import shutil

    folder = tmp_path / "v-model"
    shutil.copytree(tiny_dir / "sd15", folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "prediction_type": "v_prediction"}))
    return folder


def test_a_v_prediction_model_with_an_lcm_lora_is_refused_with_what_to_do(tiny_dir, tmp_path):
    from semdraw_widget.engine import load_model

    folder = _v_prediction_copy(tiny_dir, tmp_path)
    with pytest.raises(ValueError, match="predicts v.*LCM-LoRA.*epsilon.*lora_key=None"):
        load_model(str(folder), lora_key=str(tiny_dir / "lcm-lora"), taesd_key=str(tiny_dir / "taesd"))


def test_a_v_prediction_model_hands_the_engine_its_noise_prediction(tiny_dir, tmp_path):
    """The engine reads eps; a v model's output v becomes eps = sqrt(abar) v + sqrt(1 - abar) x_t."""
    from semdraw_widget.engine import load_model

    model = load_model(str(_v_prediction_copy(tiny_dir, tmp_path)), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([999, 259])
    cond = model.encode_prompts(["a red apple", "a blue sky"])
    with torch.no_grad():
        eps = model.predict(latents, timesteps, cond)
        v = model.unet(latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"]).sample
    abar = model.schedule.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
    assert torch.allclose(eps, abar.sqrt() * v + (1 - abar).sqrt() * latents, atol=1e-5)
