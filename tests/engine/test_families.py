"""SDXL (Lightning) and SD3 (Flash): the engine invariants on their tiny miniatures, their step formulas
against hand-computed values and diffusers' schedulers, family detection and LoRA/loading errors."""

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from semdraw_widget.engine import ModelNotFoundError, StableMultiDiffusionPipeline, StreamMultiDiffusion, load_model
from semdraw_widget.engine import loading
from semdraw_widget.engine.models.detection import detect_family
from semdraw_widget.engine.models.lora import lora_family
from semdraw_widget.engine.schedulers import DEFAULT_SCHEDULER_CONFIG
from semdraw_widget.engine.models import tiny as tiny_module
from semdraw_widget.engine.schedulers import EulerTrailingSchedule, FlowMatchSchedule

from engine_helpers import APPLE, PEAR, SIZE, run, scene

FAMILIES = ["tiny-xl", "tiny-3"]
CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def family_models():
    torch.manual_seed(0)
    return {key: load_model(key) for key in FAMILIES}


@pytest.fixture(params=FAMILIES)
def model(request, family_models):
    return family_models[request.param]


def stream_of(model, **kwargs):
    kwargs.setdefault("height", SIZE)
    kwargs.setdefault("width", SIZE)
    return StreamMultiDiffusion("cpu", model=model, **kwargs)


# ---- the engine invariants, for both families ---------------------------------------------------
def test_family_defaults(model):
    stream = stream_of(model)
    assert stream.num_slots == 4 and model.default_tile_size == 1024
    assert stream._scene.cover_alpha == 0.1  # the seed project's SDXL and SD3 streams
    assert stream.model.latent_channels == {"sdxl": 4, "sd3": 16}[model.name]
    assert stream(output_type="latent").shape == (1, model.latent_channels, SIZE // 8, SIZE // 8)


def test_same_seed_gives_identical_frames_and_another_seed_differs(model):
    a, b = scene(stream_of(model, seed=7)), scene(stream_of(model, seed=7))
    frames_a = [a(output_type="latent") for _ in range(3)]
    assert all(torch.equal(x, b(output_type="latent")) for x in frames_a)
    assert not torch.allclose(scene(stream_of(model, seed=8))(output_type="latent"), frames_a[0])


def test_layer_with_empty_mask_changes_nothing(model):
    plain, extra = scene(stream_of(model)), scene(stream_of(model))
    extra.update_single_layer(2, prompt="a blue cup", mask=np.zeros((SIZE, SIZE), dtype=np.uint8))
    extra.update_single_layer(3, prompt="no mask at all")
    for _ in range(3):
        assert torch.equal(plain(output_type="latent"), extra(output_type="latent"))


def test_background_prompt_has_no_effect_under_one_full_unblurred_layer(model):
    settings = dict(preprocess_mask_cover_alpha=0.0, bootstrap_steps=0)
    frames = []
    for background in ("a wooden table", "a starry night sky"):
        stream = stream_of(model, **settings)
        stream.update_background(prompt=background)
        stream.update_single_layer(0, prompt="a red apple", mask=np.ones((SIZE, SIZE)), mask_std=0.0, prompt_strength=1.0)
        frames.append(run(stream, 5))
    assert torch.equal(frames[0], frames[1])
    stream = stream_of(model, **settings)  # ...and it matters once mixed in (the test can fail)
    stream.update_background(prompt="a starry night sky")
    stream.update_single_layer(0, prompt="a red apple", mask=np.ones((SIZE, SIZE)), mask_std=0.0, prompt_strength=0.5)
    assert not torch.allclose(run(stream, 5), frames[0])


@pytest.mark.parametrize("mask_type", ["continuous", "discrete"])
def test_still_scene_converges_to_the_one_shot_image(model, mask_type):
    stream = scene(stream_of(model, mask_type=mask_type, seed=11))
    frame = run(stream, stream.num_slots)
    image = StableMultiDiffusionPipeline("cpu", model=model)(
        ["a red apple", "a green pear"], masks=[APPLE, PEAR], background_prompt="a wooden table", height=SIZE, width=SIZE,
        mask_type=mask_type, mask_stds=[2.0, 0.0], prompt_strengths=0.95, seed=11, bootstrap_steps=1,
        bootstrap_leak_sensitivity=None, output_type="latent", preprocess_mask_cover_alpha=model.stream_cover_alpha,
    )  # num_inference_steps=None: the family's 4 steps = the stream's t_index_list (0, 1, 2, 3)
    assert torch.allclose(frame, image, atol=1e-5, rtol=1e-5)
    assert torch.allclose(stream(output_type="latent"), frame, atol=1e-6)


def test_one_shot_panorama_and_odd_latent_sizes_run(model):
    smd = StableMultiDiffusionPipeline("cpu", model=model)
    image = smd.sample_panorama("the dolomites", height=SIZE, width=2 * SIZE, tile_size=SIZE, seed=1)
    assert image.size == (2 * SIZE, SIZE) and np.asarray(image).std() > 0
    odd = smd.sample("a cat", height=72, width=SIZE, seed=1, output_type="np")  # latent 9 x 8
    assert odd.shape == (72, SIZE, 3)


# ---- the text and denoiser inputs match diffusers' own pipelines ----------------------------------
def test_sdxl_conditioning_matches_diffusers(family_models):
    from diffusers import StableDiffusionXLPipeline

    xl = family_models["tiny-xl"]
    pipe = StableDiffusionXLPipeline(
        vae=xl.vae, text_encoder=xl.text_encoders[0], text_encoder_2=xl.text_encoders[1], tokenizer=xl.tokenizers[0],
        tokenizer_2=xl.tokenizers[1], unet=xl.unet, scheduler=EulerDiscreteScheduler(**DEFAULT_SCHEDULER_CONFIG),
    )
    prompt = "a violet teapot, seen by SDXL"  # not cached yet: computed alone, as diffusers does
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
    ours = xl.encode_prompts([prompt])
    assert torch.equal(ours["encoder_hidden_states"], embeds) and torch.equal(ours["text_embeds"], pooled)
    expected = pipe._get_add_time_ids((72, 64), (0, 0), (72, 64), torch.float32, text_encoder_projection_dim=pooled.shape[-1])
    assert torch.equal(xl.time_ids(1, 72, 64), expected)


def test_sd3_conditioning_matches_diffusers_without_t5(family_models):
    from diffusers import StableDiffusion3Pipeline

    sd3 = family_models["tiny-3"]
    pipe = StableDiffusion3Pipeline(
        transformer=sd3.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=sd3.vae,
        text_encoder=sd3.text_encoders[0], tokenizer=sd3.tokenizers[0], text_encoder_2=sd3.text_encoders[1],
        tokenizer_2=sd3.tokenizers[1], text_encoder_3=None, tokenizer_3=None,
    )
    prompt = "a violet teapot, seen by SD3"
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False)
    ours = sd3.encode_prompts([prompt])
    assert torch.equal(ours["encoder_hidden_states"], embeds) and torch.equal(ours["pooled_projections"], pooled)


# ---- step formulas -------------------------------------------------------------------------------
def test_lightning_euler_trailing_schedule_and_formulas():
    schedule = EulerTrailingSchedule(DEFAULT_SCHEDULER_CONFIG)
    assert schedule.timesteps == [999, 749, 499, 249]
    reference = EulerDiscreteScheduler(**DEFAULT_SCHEDULER_CONFIG, timestep_spacing="trailing")
    reference.set_timesteps(4)
    assert reference.timesteps.tolist() == schedule.timesteps
    sigma = schedule.sigmas(range(4))
    assert torch.allclose(sigma.float(), reference.sigmas[:4], rtol=1e-5)
    steps = schedule.prepare((0, 1, 2, 3), CPU, torch.float64)
    abar = schedule.alphas_cumprod[[999, 749, 499, 249]]
    assert torch.allclose(steps.alpha, abar.sqrt()) and torch.allclose(steps.beta, (1 - abar).sqrt())
    x_t = torch.full((4, 1, 1, 1), 2.0, dtype=torch.float64)
    eps = torch.full((4, 1, 1, 1), 0.5, dtype=torch.float64)
    x0 = steps.x0(x_t, eps)
    for i in range(4):  # by hand: DDPM form, and Euler's sigma form x_sigma - sigma eps with x_sigma = x_t / alpha
        a, b = abar[i].sqrt().item(), (1 - abar[i]).sqrt().item()
        assert x0[i].item() == pytest.approx((2.0 - b * 0.5) / a)
        assert x0[i].item() == pytest.approx(2.0 * (sigma[i].item() ** 2 + 1) ** 0.5 - sigma[i].item() * 0.5)
    noised = steps.add_noise(torch.ones(1, 1, 1, 1, dtype=torch.float64), eps)
    assert noised[2].item() == pytest.approx(abar[2].sqrt().item() + (1 - abar[2]).sqrt().item() * 0.5)
    # re-noising x0 with the predicted eps is diffusers' deterministic Euler step (in the sigma space)
    x_sigma = torch.tensor([[[[1.3]]]], dtype=torch.float64) * sigma[0].item()
    eps_hat = torch.tensor([[[[0.7]]]], dtype=torch.float64)
    reference.set_timesteps(4)
    euler = reference.step(eps_hat, reference.timesteps[0], x_sigma).prev_sample
    x0 = steps.select(slice(0, 1)).x0(x_sigma / (sigma[0].item() ** 2 + 1) ** 0.5, eps_hat)
    ours = steps.select(slice(1, 2)).add_noise(x0, eps_hat) / steps.alpha[1]
    assert ours.item() == pytest.approx(euler.item(), rel=1e-6)
    for count in (2, 3, 50):  # another length is diffusers' trailing schedule of that many steps
        reference.set_timesteps(count)
        assert schedule.with_steps(count).timesteps == reference.timesteps.round().long().tolist()


def test_flow_matching_schedule_and_step_match_a_hand_computed_example():
    schedule = FlowMatchSchedule({"shift": 3.0, "num_train_timesteps": 1000})
    shifted = lambda s: 3.0 * s / (1.0 + 2.0 * s)
    sigma_min = shifted(1 / 1000)
    raw = [1.0 - i * (1.0 - sigma_min) / 3 for i in range(4)]
    by_hand = [shifted(s) for s in raw]  # 1.0, 0.8577, 0.6022, 0.0089
    steps = schedule.prepare((0, 1, 2, 3), CPU, torch.float64)
    assert steps.beta.tolist() == pytest.approx(by_hand, rel=1e-9)
    assert steps.timesteps.tolist() == pytest.approx([1000 * s for s in by_hand], rel=1e-6)
    assert steps.timesteps.tolist() == pytest.approx([1000.0, 857.6923, 602.1506, 8.9286], abs=1e-3)
    reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
    reference.set_timesteps(4)
    assert steps.timesteps.tolist() == pytest.approx(reference.timesteps.tolist(), rel=1e-5)
    x_t = torch.full((4, 1, 1, 1), 2.0, dtype=torch.float64)
    velocity = torch.full((4, 1, 1, 1), 0.5, dtype=torch.float64)
    x0 = steps.x0(x_t, velocity)  # x0 = x_t - sigma v; finite at sigma = 1 (alpha = 0)
    assert x0.flatten().tolist() == pytest.approx([2.0 - s * 0.5 for s in by_hand])
    noise = torch.full((4, 1, 1, 1), -1.0, dtype=torch.float64)
    noised = steps.add_noise(torch.full((1, 1, 1, 1), 3.0, dtype=torch.float64), noise)
    assert noised.flatten().tolist() == pytest.approx([(1 - s) * 3.0 - s for s in by_hand])
    # the flow's own Euler step x + (sigma' - sigma) v equals x0 + add_noise with eps = v + x0
    euler = reference.step(velocity[:1].float(), reference.timesteps[1 - 1], x_t[:1].float()).prev_sample
    eps = velocity[:1] + x0[:1]
    assert steps.select(slice(1, 2)).add_noise(x0[:1], eps).item() == pytest.approx(euler.item(), rel=1e-5)
    assert steps.noise_levels == pytest.approx([s / (1 + s * s) ** 0.5 for s in by_hand])


def test_one_full_layer_is_sampled_exactly_as_the_familys_own_sampler_samples_it(model):
    """One unblurred full-canvas layer, all of its prompt, no bootstrapping: the region sampler reduces to the
    family's own sampler. Lightning is a deterministic Euler sampler: each step carries the noise the model
    predicted. Flash-SD3 is a consistency sampler (as LCM): each step takes x0 = x - sigma v and re-noises it
    to the next sigma, with the seeded noise of that slot (its own scheduler draws fresh noise there)."""
    from semdraw_widget.engine.blend import slot_noise

    prompt, seed = "a violet teapot", 5
    full = np.ones((SIZE, SIZE), dtype=bool)
    smd = StableMultiDiffusionPipeline("cpu", model=model)
    ours = smd([prompt], masks=[full], prompt_strengths=1.0, mask_stds=0.0, bootstrap_steps=0, seed=seed,
               height=SIZE, width=SIZE, output_type="latent")

    steps = model.schedule.prepare(model.default_t_index_list, CPU, torch.float32)
    noise = slot_noise(seed, (len(steps), model.latent_channels, SIZE // 8, SIZE // 8), CPU, torch.float32)
    x = noise[:1]
    cond = model.encode_prompts([prompt])
    if model.name == "sdxl":
        reference = EulerDiscreteScheduler(**DEFAULT_SCHEDULER_CONFIG, timestep_spacing="trailing")
        reference.set_timesteps(len(steps))
        # Euler's x_sigma for x_t = noise, where the engine starts (diffusers' own start, sigma_max * noise,
        # is 0.2% smaller); the model reads it scaled back to x_t
        x = x * (reference.sigmas[0] ** 2 + 1) ** 0.5
        for i, t in enumerate(reference.timesteps):
            prediction = model.predict(reference.scale_model_input(x, t), steps.timesteps[i:i + 1], cond)
            x = reference.step(prediction, t, x).prev_sample
    else:
        reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
        reference.set_timesteps(len(steps))
        for i, t in enumerate(reference.timesteps):
            x0 = x - reference.sigmas[i] * model.predict(x, steps.timesteps[i:i + 1], cond)
            last = i + 1 == len(reference.timesteps)
            x = x0 if last else reference.scale_noise(x0, reference.timesteps[i + 1:i + 2], noise[i + 1:i + 2])
    assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4), (ours - x).abs().max()


def test_each_slot_is_told_the_noise_its_latent_was_made_with(model, monkeypatch):
    """Guidance's residual and the bootstrapped background use "the noise each slot's latent was made with"
    (`blend.denoise`). For an Euler family that is the noise carried from the slot before, not the seeded noise."""
    from semdraw_widget.engine import oneshot, stream as stream_module

    calls = []

    def recording(real):
        def denoise(family, steps, x_t, batch, background, guidance, noise, *args, **kwargs):
            x0 = real(family, steps, x_t, batch, background, guidance, noise, *args, **kwargs)
            calls.append((steps, x_t, noise, x0))
            return x0
        return denoise

    monkeypatch.setattr(stream_module, "denoise", recording(stream_module.denoise))
    stream = scene(stream_of(model, cfg_type="self", guidance_scale=2.0, bootstrap_steps=2))
    run(stream, 3)
    for (_, _, _, before), (steps, x_t, noise, _) in zip(calls, calls[1:]):  # slot i+1 now came from slot i then
        made = steps.select(slice(1, None)).add_noise(before[:-1], noise[1:])
        assert torch.allclose(x_t[1:], made, atol=1e-4)

    calls.clear()
    monkeypatch.setattr(oneshot, "denoise", recording(oneshot.denoise))
    StableMultiDiffusionPipeline("cpu", model=model)(
        ["a red apple"], masks=[APPLE], cfg_type="self", guidance_scale=2.0, bootstrap_steps=2, height=SIZE, width=SIZE,
        output_type="latent",
    )
    for (_, _, _, before), (step, x, noise, _) in zip(calls, calls[1:]):
        assert torch.allclose(x, step.add_noise(before, noise), atol=1e-4)


# ---- detection, defaults, loading ------------------------------------------------------------------
def test_family_is_detected_from_the_checkpoint(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub ids: their names decide (no retries against an unreachable hub)

    root = tiny_module.tiny_model_dir("sdxl")
    tiny_module.tiny_model_dir("sd3")
    tiny_module.tiny_model_dir("sd15")
    assert [detect_family(str(root / name)) for name in ("sd15", "sdxl", "sd3")] == ["sd15", "sdxl", "sd3"]
    assert [detect_family(key) for key in ("tiny", "tiny-xl", "tiny-3")] == ["sd15", "sdxl", "sd3"]
    hub = {
        "stabilityai/stable-diffusion-xl-base-1.0": "sdxl", "stabilityai/stable-diffusion-3-medium-diffusers": "sd3",
        "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15", "someone/my-sdxl-finetune": "sdxl",
    }
    assert {key: detect_family(key) for key in hub} == hub
    for key, family in (("conditioner.embedders.1.model.ln_final.weight", "sdxl"),
                        ("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "sd3")):
        save_file({key: torch.zeros(1)}, str(tmp_path / f"{family}.safetensors"))
        assert detect_family(str(tmp_path / f"{family}.safetensors")) == family
    assert detect_family(str(tiny_module.write_single_file(tmp_path / "sd15.safetensors"))) == "sd15"
    bare = tmp_path / "bare-xl"  # no model_index.json: the subfolders tell
    (bare / "text_encoder_2").mkdir(parents=True)
    assert detect_family(str(bare)) == "sdxl"


def test_stream_picks_the_family_and_its_defaults_from_a_folder():
    root = tiny_module.tiny_model_dir("sdxl")
    stream = StreamMultiDiffusion(
        "cpu", hf_key=str(root / "sdxl"), lora_key=str(root / "lightning-lora"), taesd_key=str(root / "taesdxl"),
        height=SIZE, width=SIZE,
    )
    assert stream.model.name == "sdxl" and stream.steps.timesteps.tolist() == [999, 749, 499, 249]
    stream.update_single_layer(0, prompt="a cat", mask=APPLE)
    assert stream().size == (SIZE, SIZE)
    assert StreamMultiDiffusion("cpu", hf_key="tiny", sd_version="3", height=SIZE, width=SIZE).model.name == "sd3"
    with pytest.raises(ValueError, match="sd_version"):
        load_model("tiny-xl", family="3")
    with pytest.raises(ValueError, match="'1.5', 'xl', '3'"):
        load_model("tiny", family="2.1")


def test_lightning_lora_is_fused_and_the_lightning_unet_can_be_swapped_in(family_models):
    fused = family_models["tiny-xl"].unet.state_dict()
    bare = load_model("tiny-xl", lora_key=None).unet.state_dict()
    changed = [k for k in bare if not torch.equal(bare[k], fused[k])]
    assert changed and all(".attn" in k for k in changed)
    from safetensors.torch import load_file

    root = tiny_module.tiny_model_dir("sdxl")
    swapped = load_model("tiny-xl", unet_key="lightning").unet.state_dict()  # and no LoRA on top
    distilled = load_file(str(root / "lightning-unet" / "sdxl_lightning_4step_unet.safetensors"))
    assert all(torch.equal(swapped[k], distilled[k]) for k in distilled)


def test_flash_lora_is_merged(family_models):
    merged = family_models["tiny-3"].transformer.state_dict()
    bare = load_model("tiny-3", lora_key=None).transformer.state_dict()
    assert set(merged) == set(bare)
    changed = [k for k in bare if not torch.equal(bare[k], merged[k])]
    assert changed and all(".attn." in k for k in changed)


def test_a_lora_of_another_family_is_refused_with_its_family_named():
    root = tiny_module.tiny_model_dir("sdxl")
    tiny_module.tiny_model_dir("sd3")
    tiny_module.tiny_model_dir("sd15")
    with pytest.raises(ValueError, match=r"made for SD 1\.5, but this model is SDXL"):
        load_model("tiny-xl", lora_key=str(root / "lcm-lora"))
    with pytest.raises(ValueError, match=r"made for SDXL, but this model is SD 1\.5"):
        load_model("tiny", lora_key=str(root / "lightning-lora" / "sdxl_lightning_4step_lora.safetensors"))
    with pytest.raises(ValueError, match=r"made for SD 1\.5, but this model is SD3"):
        load_model("tiny-3", lora_key=str(root / "lcm-lora"))
    with pytest.raises(ValueError, match=r"made for SD3, but this model is SDXL"):
        load_model("tiny-xl", lora_key=str(root / "flash-lora" / "adapter_model.safetensors"))
    real_width = {  # the real checkpoints say it by their cross-attention width
        768: "sd15", 2048: "sdxl", 1024: "sd2",
    }
    for width, family in real_width.items():
        key = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
        assert lora_family({key: torch.zeros(4, width)}) == family


def test_full_vaes(family_models):
    xl16 = load_model("tiny-xl", lora_key=None, use_tiny_vae=False, dtype=torch.float16)
    assert xl16.unet.dtype == torch.float16 and xl16.vae.dtype == torch.float32  # the SDXL VAE overflows in fp16
    sd3 = load_model("tiny-3", lora_key=None, use_tiny_vae=False)
    assert type(sd3.vae).__name__ == "AutoencoderKL" and sd3.shift_factor == pytest.approx(0.0609)
    stream = stream_of(sd3)
    stream.update_single_layer(0, prompt="a cat", mask=APPLE)
    assert stream(output_type="np").shape == (SIZE, SIZE, 3)


def test_gated_sd3_weights_say_how_to_get_them(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as error:
        load_model("stabilityai/stable-diffusion-3-medium-diffusers", lora_key=None)
    message = str(error.value)
    assert "gated" in message and "licence" in message and "hf auth login" in message


def test_out_of_memory_propagates_with_a_hint():
    class Huge(torch.nn.Module):
        def to(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(torch.OutOfMemoryError) as error:
        loading.to_device([Huge()], CPU, torch.float16, "SDXL")
    assert "Tried to allocate" in str(error.value)
    assert any("not enough memory" in note and "SDXL" in note for note in error.value.__notes__)


def test_default_canvas_size_follows_the_family():
    from semdraw_widget.engine import StreamMultiDiffusion

    assert StreamMultiDiffusion("cpu", hf_key="tiny").height == 512
    xl = StreamMultiDiffusion("cpu", hf_key="tiny-xl")
    assert (xl.height, xl.width) == (1024, 1024)
    assert StreamMultiDiffusion("cpu", hf_key="tiny-3", width=256).width == 256
