"""Loading as real users meet it: hub ids read through a fake Hugging Face cache (no network), real
single-file layouts, fp16 variants, family detection from model_index.json, and the LoRA edge cases."""

import fnmatch
import logging
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from semdraw_widget.engine import ModelNotFoundError, UnsafeCheckpointError, load_model
from semdraw_widget.engine import loading
from semdraw_widget.engine.models.detection import detect_family
from semdraw_widget.engine.models.sd15 import DEFAULT_HF_KEY, fit_clip_keys
from semdraw_widget.engine.models import tiny as tiny_module

SNAPSHOT = "0" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, offline; add(repo_id, folder) puts a repository in it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def add(repo_id, folder):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / SNAPSHOT)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(SNAPSHOT)
        return repo / "snapshots" / SNAPSHOT

    return add


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---- 1. single files in the real layout ----------------------------------------------------------
def test_single_file_text_encoder_keys_fit_either_clip_layout():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=10, max_position_embeddings=7, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    for cls in (CLIPTextModel, CLIPTextModelWithProjection):  # flattened in transformers >= 5.6, and nested
        model = cls(config)
        own = model.state_dict()
        bare = {k.removeprefix("text_model."): v for k, v in own.items()}
        nested = {"text_model." + k: v for k, v in bare.items() if not k.startswith("text_projection")}
        nested.update({k: v for k, v in bare.items() if k.startswith("text_projection")})
        for layout in (bare, nested, {**nested, "text_model.embeddings.position_ids": torch.arange(7)[None]}):
            fitted = fit_clip_keys(layout, model)
            assert not model.load_state_dict(fitted, strict=False).missing_keys
            assert set(fitted) <= set(own)


def test_real_sd15_single_file_layout_loads(tiny_dir, tmp_path):
    file = tiny_module.write_single_file(tmp_path / "civitai-style.safetensors")
    keys = list(load_file(str(file)))
    assert any(k.startswith("cond_stage_model.transformer.text_model.embeddings.") for k in keys)  # as real files have
    assert not any(k.startswith("cond_stage_model.transformer.embeddings.") for k in keys)
    single = load_model(str(file), config=str(tiny_dir / "sd15"), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    folder = load_model(str(tiny_dir / "sd15"), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    assert same(single.text_encoder.state_dict(), folder.text_encoder.state_dict())
    # a file converted by a tool that wrote the flattened layout loads too
    flat = {k.replace("transformer.text_model.", "transformer."): v for k, v in load_file(str(file)).items()}
    save_file(flat, str(tmp_path / "flat.safetensors"))
    again = load_model(str(tmp_path / "flat.safetensors"), config=str(tiny_dir / "sd15"), lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    assert same(again.text_encoder.state_dict(), folder.text_encoder.state_dict())


# ---- 2. what the not-found messages tell people to run -------------------------------------------
def test_not_found_names_the_hf_commands_and_only_the_needed_files(hub_cache, tiny_dir):
    with pytest.raises(ModelNotFoundError) as error:
        load_model("semdraw-tests/no-such-model", lora_key=None, dtype=torch.float16)
    message = str(error.value)
    assert "`hf auth login`" in message and "`huggingface-cli login`" in message
    assert "`hf download semdraw-tests/no-such-model model_index.json unet/config.json unet/diffusion_pytorch_model.fp16.safetensors" in message
    assert '"tokenizer/*"' in message and "text_encoder/model.fp16.safetensors" in message and "without `.fp16`" in message
    assert "vae/" not in message  # TAESD decodes: the full VAE is not needed
    assert "`huggingface-cli download` with the same arguments" in message
    with pytest.raises(ModelNotFoundError) as error:
        load_model("semdraw-tests/no-such-model", lora_key=None, use_tiny_vae=False)
    assert "vae/diffusion_pytorch_model.safetensors" in str(error.value) and ".fp16" not in str(error.value)


def test_not_found_says_why_and_which_option_takes_a_local_copy(hub_cache, tiny_dir, monkeypatch):
    def refuse(**kw):
        raise OSError("401 Client Error: access to the repository is restricted\nmore detail")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFoundError) as error:
        loading.hub_call(refuse, "someone/model", ["x.safetensors"], "Model")
    assert "download failed: OSError: 401 Client Error: access to the repository is restricted" in str(error.value)
    assert "more detail" not in str(error.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="as taesd_key") as error:
        load_model("tiny", taesd_key="semdraw-tests/no-taesd")
    assert "as hf_key" not in str(error.value)
    with pytest.raises(ModelNotFoundError, match="as lora_key") as error:
        load_model("tiny", lora_key="semdraw-tests/no-lora")
    assert "as hf_key" not in str(error.value)


def test_an_unreachable_hub_is_tried_once_per_load_and_named_as_the_cause(hub_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub import file_download

    client = getattr(file_download, "httpx2", None) or file_download.httpx  # the HTTP client huggingface_hub uses
    attempts = []

    def no_network(*args, **kwargs):  # what huggingface_hub meets without DNS, after its retries
        attempts.append(kwargs.get("url"))
        raise client.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_download, "get_hf_file_metadata", no_network)
    monkeypatch.setattr(loading, "_hub_unreachable", (float("-inf"), ""), raising=False)  # restored afterwards
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(OSError):
        huggingface_hub.hf_hub_download("someone/model", "config.json")
    requests_per_download = len(attempts)  # huggingface_hub retries on its own

    def attempts_of_a_failing_load(**options):
        attempts.clear()
        with pytest.raises(ModelNotFoundError) as error:
            load_model(DEFAULT_HF_KEY, dtype=torch.float16, lora_key=None, **options)
        message = str(error.value)
        assert "the hub is unreachable (ConnectError: [Errno -3] Temporary failure in name resolution" in message
        assert "does not appear to have" not in message and "download failed" not in message
        return len(attempts) / requests_per_download

    assert attempts_of_a_failing_load() == 1  # the family look-up's: no component tries again
    assert attempts_of_a_failing_load(family="1.5") == 0  # nor the next load, a moment later
    monkeypatch.setattr(loading, "HUB_RETRY_AFTER_S", 0.0, raising=False)
    assert attempts_of_a_failing_load(family="1.5") == 1  # the UNet's fp16 variant: the plain files do not try again
    # a repository that refuses (gated, missing file) is not an unreachable hub: the next call asks again
    monkeypatch.setattr(loading, "HUB_RETRY_AFTER_S", 60.0, raising=False)
    monkeypatch.setattr(loading, "_hub_unreachable", (float("-inf"), ""), raising=False)
    refused = []

    def refuse(local_files_only):
        refused.append(local_files_only)
        raise OSError("401 Client Error: access to the repository is restricted")

    for _ in range(2):
        with pytest.raises(ModelNotFoundError, match="download failed: OSError: 401"):
            loading.hub_call(refuse, "someone/model", ["x.safetensors"], "Model")
    assert refused == [True, False, True, False]


# ---- 3. the seed project's default hub id ----------------------------------------------------------
def test_removed_runwayml_id_reads_the_maintained_copy_and_says_so(hub_cache, tiny_dir, caplog):
    hub_cache("stable-diffusion-v1-5/stable-diffusion-v1-5", tiny_dir / "sd15")
    with caplog.at_level("WARNING", logger="semdraw_widget"):
        model = load_model("runwayml/stable-diffusion-v1-5", lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    assert model.name == "sd15" and "removed from the Hugging Face hub" in model.notice
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in caplog.text
    hub_cache("runwayml/stable-diffusion-v1-5", tiny_dir / "sd15")  # still cached here: used as it is
    assert load_model("runwayml/stable-diffusion-v1-5", lora_key=None, taesd_key=str(tiny_dir / "taesd")).notice == ""


# ---- 4. dtype and fp16 variants ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def variant_folder(tiny_dir, tmp_path_factory):
    """A copy of the tiny SD 1.5 folder that also holds fp16 variant files with other weights."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("variant") / "sd15"
    shutil.copytree(tiny_dir / "sd15", folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(1.0)
    unet.to(torch.float16).save_pretrained(folder / "unet", variant="fp16")
    return folder


def test_fp16_prefers_the_variant_files_and_falls_back_to_the_plain_ones(variant_folder, tiny_dir, hub_cache, monkeypatch):
    from diffusers import UNet2DConditionModel

    variant = load_file(str(variant_folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    plain = load_file(str(variant_folder / "unet" / "diffusion_pytorch_model.safetensors"))
    calls = []
    real = UNet2DConditionModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(spy))
    common = dict(lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    half = load_model(str(variant_folder), dtype=torch.float16, **common).unet.state_dict()
    assert all(torch.equal(half[k], variant[k]) for k in variant) and calls[-1]["torch_dtype"] == torch.float16
    full = load_model(str(variant_folder), dtype=torch.float32, **common).unet.state_dict()
    assert all(torch.equal(full[k], plain[k]) for k in plain) and "variant" not in calls[-1]
    # a folder and a hub repository without fp16 files: the plain ones, loaded straight in float16
    no_variant = load_model(str(tiny_dir / "sd15"), dtype=torch.float16, **common).unet.state_dict()
    assert all(torch.equal(no_variant[k], plain[k].half()) for k in plain) and calls[-1]["torch_dtype"] == torch.float16
    hub_cache("someone/with-variant", variant_folder)
    hub_cache("someone/without-variant", tiny_dir / "sd15")
    from_hub = load_model("someone/with-variant", dtype=torch.float16, **common).unet.state_dict()
    assert all(torch.equal(from_hub[k], variant[k]) for k in variant)
    from_hub = load_model("someone/without-variant", dtype=torch.float16, **common).unet.state_dict()
    assert all(torch.equal(from_hub[k], plain[k].half()) for k in plain)


def test_fp16_without_variant_files_logs_no_error_and_never_reads_a_pickled_variant(tiny_dir, tmp_path):
    folder = tmp_path / "sd15"
    shutil.copytree(tiny_dir / "sd15", folder)
    plain = {part: load_file(str(folder / part / name)) for part, name in
             (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors"))}
    for part, name in (("unet", "diffusion_pytorch_model.fp16.bin"), ("text_encoder", "model.fp16.bin")):
        torch.save({k: (v + 1).half() for k, v in plain[part].items()}, str(folder / part / name))  # other weights
    records = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    libraries = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in libraries:
        logger.addHandler(handler)
    try:
        model = load_model(str(folder), dtype=torch.float16, lora_key=None, taesd_key=str(tiny_dir / "taesd"))
    finally:
        for logger in libraries:
            logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == []
    for part, module in (("unet", model.unet), ("text_encoder", model.text_encoder)):
        loaded = module.state_dict()
        assert all(torch.equal(loaded[k], v.half()) for k, v in plain[part].items() if k in loaded)


def test_sharded_t5_patterns_match_the_files_transformers_writes(tmp_path):
    from transformers import T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2))
    for dtype, variant in ((torch.float16, "fp16"), (torch.float32, None)):
        folder = tmp_path / str(variant) / "text_encoder_3"
        t5.to(dtype).save_pretrained(folder, variant=variant, max_shard_size=4000)
        written = sorted(f"text_encoder_3/{file.name}" for file in folder.iterdir())
        assert sum(name.endswith(".safetensors") for name in written) > 1  # sharded, as the real T5 is
        patterns = loading.repo_files({"text_encoder_3": loading.SHARDED_WEIGHTS}, dtype, pipeline=False)
        assert [name for name in written if not any(fnmatch.fnmatch(name, p) for p in patterns)] == []
        if variant:  # and the plain shards are not downloaded with the fp16 ones
            assert not any(fnmatch.fnmatch("text_encoder_3/model-00001-of-00002.safetensors", p) for p in patterns)


def test_lightning_unet_never_reads_the_base_unet_weights(hub_cache, monkeypatch):
    from diffusers import UNet2DConditionModel

    tiny_dir = tiny_module.tiny_model_dir("sdxl")
    base = hub_cache("someone/sdxl-without-unet-weights", tiny_dir / "sdxl")
    (base / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # only unet/config.json is there

    def forbidden(*args, **kwargs):
        raise AssertionError("the base UNet's weights were loaded")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", forbidden)
    lightning = tiny_dir / "lightning-unet" / "sdxl_lightning_4step_unet.safetensors"
    for key in ("someone/sdxl-without-unet-weights", str(base)):
        model = load_model(key, unet_key=str(lightning), taesd_key=str(tiny_dir / "taesdxl"))
        assert same(model.unet.state_dict(), load_file(str(lightning)))
    with pytest.raises(ModelNotFoundError) as error:
        load_model("someone/not-cached-xl", family="xl", unet_key=str(lightning), lora_key=None)
    assert "unet/config.json" in str(error.value) and "unet/diffusion_pytorch_model" not in str(error.value)


def test_single_file_with_the_full_vae_names_the_vae_config_to_download(hub_cache, tmp_path):
    file = tiny_module.write_single_file(tmp_path / "civitai-style.safetensors")
    for use_tiny_vae in (True, False):
        with pytest.raises(ModelNotFoundError) as error:
            load_model(str(file), config="semdraw-tests/no-config", lora_key=None, use_tiny_vae=use_tiny_vae)
        assert ("vae/config.json" in str(error.value)) == (not use_tiny_vae)


# ---- 5. family detection from model_index.json --------------------------------------------------------
def test_hub_family_comes_from_a_downloaded_model_index(tmp_path, monkeypatch):
    index = tmp_path / "model_index.json"
    index.write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    requests = []

    def fake_hub(repo_id, filename, local_files_only):
        requests.append((repo_id, filename, local_files_only))
        if local_files_only or repo_id != "SG161222/RealVisXL_V4.0":
            raise OSError(f"{repo_id}/{filename} is not there")
        return str(index)

    monkeypatch.setattr(loading, "hub_file", fake_hub)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert detect_family("SG161222/RealVisXL_V4.0") == "sdxl"  # its name does not say so
    assert ("SG161222/RealVisXL_V4.0", "model_index.json", False) in requests
    assert detect_family("someone/unreachable-sdxl") == "sdxl"  # no model_index.json: the name decides
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests.clear()
    assert detect_family("SG161222/RealVisXL_V4.0") == "sd15"  # offline and not cached: the name is all there is
    assert all(local for _, _, local in requests)


# ---- 7. partly matching LoRAs ---------------------------------------------------------------------------
def test_a_lora_that_partly_fits_is_reported(tiny_dir, tmp_path):
    state = load_file(str(tiny_dir / "lcm-lora" / "pytorch_lora_weights.safetensors"))
    half = {k.replace("attn1", "attnX"): v for k, v in state.items()}  # self-attention layers: half of them
    save_file(half, str(tmp_path / "half.safetensors"))
    with pytest.warns(UserWarning, match=r"half\.safetensors'?: 44 of its 88 layers match no layer"):
        load_model("tiny", lora_key=str(tmp_path / "half.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*(deprecated|torchvision).*")
        load_model("tiny", lora_key=str(tiny_dir / "lcm-lora"))


def test_a_pickled_lora_is_refused_unless_allowed(tiny_dir, tmp_path):
    state = load_file(str(tiny_dir / "lcm-lora" / "pytorch_lora_weights.safetensors"))
    torch.save(state, str(tmp_path / "lora.bin"))
    with pytest.raises(UnsafeCheckpointError, match=r"pickled LoRA \(\.bin\).*allow_pickle=True") as error:
        load_model("tiny", lora_key=str(tmp_path / "lora.bin"))
    assert "corrupt" not in str(error.value)
    allowed = load_model("tiny", lora_key=str(tmp_path / "lora.bin"), allow_pickle=True).unet.state_dict()
    assert same(allowed, load_model("tiny", lora_key=str(tiny_dir / "lcm-lora")).unet.state_dict())


# ---- 9. SD3 LoRAs in the diffusers layout ----------------------------------------------------------------
def test_sd3_diffusers_lora_from_the_hub_is_merged(hub_cache, tmp_path):
    tiny_dir = tiny_module.tiny_model_dir("sd3")
    peft_state = load_file(str(tiny_dir / "flash-lora" / "adapter_model.safetensors"))
    diffusers_state = {k.replace("base_model.model.", "transformer."): v for k, v in peft_state.items()}
    (tmp_path / "repo").mkdir()
    save_file(diffusers_state, str(tmp_path / "repo" / "pytorch_lora_weights.safetensors"))
    hub_cache("someone/sd3-lora", tmp_path / "repo")
    merged = load_model("tiny-3", lora_key="someone/sd3-lora").transformer.state_dict()
    reference = load_model("tiny-3").transformer.state_dict()  # the same LoRA as a PEFT adapter
    assert set(merged) == set(reference)
    assert all(torch.allclose(merged[k], reference[k], atol=1e-6) for k in merged)
    assert not same(merged, load_model("tiny-3", lora_key=None).transformer.state_dict())
    with pytest.raises(ModelNotFoundError) as error:
        load_model("tiny-3", lora_key="someone/no-such-sd3-lora")
    message = str(error.value)
    assert "pytorch_lora_weights.safetensors" in message and "adapter_config.json" in message and "as lora_key" in message
