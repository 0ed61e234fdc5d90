"""The seed project's API (ironjr/semantic-draw, `src/model/`), whole: its classes, options, argument orders,
layer indices, mask images and defaults, and where ours deliberately differs, the switch that gives the seed's.

The reference numbers are computed here from the seed's formulas as we read them, written out, not from its code.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from engine_helpers import APPLE, PEAR, SIZE, box_mask, run, scene
from PIL import Image

import semdraw_widget
from semdraw_widget.engine import blend, loading, regions

SEED_CLASSES = [
    "StableMultiDiffusionPipeline", "StableMultiDiffusionSDXLPipeline", "StableMultiDiffusion3Pipeline",
    "StableMultiDiffusionKolorsPipeline", "StreamMultiDiffusion", "StreamMultiDiffusionSDXL", "StreamMultiDiffusion3",
]


@pytest.mark.parametrize("name", SEED_CLASSES)
def test_every_class_of_the_seeds_model_package_is_importable(name):
    assert name in semdraw_widget.__all__ and getattr(semdraw_widget, name).__name__ == name


def test_kolors_is_refused_saying_what_it_would_need():
    with pytest.raises(NotImplementedError, match=r"ChatGLM3 text encoder .* use StableMultiDiffusionSDXLPipeline"):
        semdraw_widget.StableMultiDiffusionKolorsPipeline("cpu", has_i2t=False)


@pytest.mark.parametrize("cls, family", [
    ("StreamMultiDiffusionSDXL", "sdxl"), ("StreamMultiDiffusion3", "sd3"),
    ("StableMultiDiffusionSDXLPipeline", "sdxl"), ("StableMultiDiffusion3Pipeline", "sd3"),
])
def test_the_per_family_classes_run_their_family_with_the_seeds_schedule(cls, family):
    pipeline = getattr(semdraw_widget, cls)("cpu", hf_key="tiny", **({"height": SIZE, "width": SIZE} if "Stream" in cls else {}))
    assert pipeline.model.name == family
    if "Stream" in cls:
        assert pipeline._scene.cover_alpha == 0.1 and pipeline.num_slots == 5  # 0, 4, 12, 25, 37 of 50 steps
        pipeline.update_single_layer(0, "a cat", mask=APPLE)
        assert pipeline(output_type="latent").shape[-1] == SIZE // 8
    else:
        assert pipeline.t_index_list == (0, 4, 12, 25, 37) and pipeline.schedule.num_steps == 50
        assert pipeline(["a cat"], masks=[APPLE], height=SIZE, width=SIZE, seed=1).size == (SIZE, SIZE)
    with pytest.raises(ValueError, match=f"{cls} runs"):
        getattr(semdraw_widget, cls)("cpu", hf_key="tiny", sd_version="1.5")


# ---- the constructors take the seed's options ----------------------------------------------------------
def test_the_streaming_readme_constructor_runs_with_every_option(tiny):
    stream = semdraw_widget.StreamMultiDiffusion(
        "cpu", hf_key="tiny", height=SIZE, width=SIZE, cfg_type="none", autoflush=True, use_tiny_vae=True,
        mask_type="continuous", bootstrap_steps=2, bootstrap_mix_steps=1.5, seed=2024, frame_buffer_size=1,
        num_inference_steps=50, prompt_queue_capacity=8, use_xformers=True, lora_weight=1.0, i2t_to_device=False,
    )
    assert stream.autoflush and stream._scene.bootstrap_mix_steps == 1.5 and stream.steps.timesteps.tolist() == [999, 919, 759, 499, 259]
    with pytest.raises(ValueError, match="frame_buffer_size=2: only 1 is supported"):
        semdraw_widget.StreamMultiDiffusion("cpu", model=tiny, frame_buffer_size=2)


def test_the_one_shot_constructor_takes_the_seeds_options():
    smd = semdraw_widget.StableMultiDiffusionPipeline(
        "cpu", torch.float32, sd_version="1.5", hf_key="tiny", lora_key=True, load_from_local=True, default_mask_std=2.0,
        default_mask_strength=0.9, default_prompt_strength=0.8, default_bootstrap_steps=2, default_boostrap_mix_steps=1.5,
        default_bootstrap_leak_sensitivity=0.1, default_preprocess_mask_cover_alpha=0.2, t_index_list=[0, 12, 25, 37],
        mask_type="continuous", has_i2t=False,
    )
    assert (smd.default_mask_std, smd.default_mask_strength, smd.default_prompt_strength) == (2.0, 0.9, 0.8)
    assert smd.t_index_list == (0, 12, 25, 37) and smd.mask_type == "continuous" and smd.captioner is None
    smd.prepare_lcm_schedule([0, 4], 50)
    assert smd.t_index_list == (0, 4)


# ---- the seed's defaults -------------------------------------------------------------------------------
def test_the_one_shot_defaults_are_the_seeds():
    smd = semdraw_widget.StableMultiDiffusionPipeline("cpu", hf_key="tiny", has_i2t=False)
    steps = smd.schedule.prepare(smd.t_index_list, smd.device, torch.float64)
    assert steps.timesteps.tolist() == [999, 919, 759, 499, 259]  # t_index_list 0, 4, 12, 25, 37
    assert (smd.default_mask_std, smd.default_prompt_strength, smd.default_mask_strength) == (1.0, 1.0, 1.0)
    assert type(smd.model.vae).__name__ == "AutoencoderKL"  # the full VAE, not TAESD
    assert (smd.mask_type, smd.default_bootstrap_steps, smd.default_boostrap_mix_steps) == ("discrete", 1, 1.0)
    assert (smd.default_bootstrap_leak_sensitivity, smd.default_preprocess_mask_cover_alpha) == (0.2, 0.3)


# ---- argument orders, indices, masks -------------------------------------------------------------------
def test_update_single_layer_takes_the_seeds_positional_order_with_suffix_third(make_stream):
    stream = make_stream()
    stream.update_background(prompt="a meadow")
    stream.update_single_layer(0, "a cat", "blurry", ", in ", 0.5, APPLE, 0.8, 2.0)
    layer = stream._scene.layers[0]
    assert (layer.prompt, layer.negative_prompt) == ("a cat, in a meadow", "blurry")
    assert (layer.prompt_strength, layer.mask_strength, layer.mask_std) == (0.5, 0.8, 2.0)
    assert torch.equal(layer.mask, torch.from_numpy(APPLE).float())
    stream.update_layers(["a dog", "a bird"], ["", "dark"], " near ", [0.7, 0.6], [APPLE, PEAR], 0.9, 1.0)
    dog, bird = stream._scene.layers
    assert (dog.prompt, bird.prompt, bird.negative_prompt) == ("a dog near a meadow", "a bird near a meadow", "dark")
    assert (dog.prompt_strength, bird.prompt_strength, bird.mask_strength, bird.mask_std) == (0.7, 0.6, 0.9, 1.0)


def test_an_index_past_the_last_layer_or_none_adds_one_and_a_negative_one_is_refused(make_stream):
    stream = make_stream()
    stream.update_single_layer(idx=0, prompt="first", mask=APPLE)
    stream.update_single_layer(idx=1, prompt="one past the end", mask=PEAR)
    stream.update_single_layer(idx=7, prompt="far past the end")
    stream.update_single_layer(prompt="no index")
    assert [layer.prompt for layer in stream._scene.layers] == ["first", "one past the end", "far past the end", "no index"]
    with pytest.warns(UserWarning, match="a new layer needs a prompt: nothing was added"):
        stream.update_single_layer(idx=4, mask=APPLE)
    with pytest.raises(IndexError, match="is not a layer"):
        stream.update_single_layer(idx=-1, prompt="x")
    assert stream.num_layers == 4


def black_square_on_white(size=SIZE, side=SIZE // 2, mode="L"):
    image = Image.new(mode, (size, size), "white")
    image.paste(Image.new(mode, (side, side), "black"), (0, 0))
    return image


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "1"])
def test_an_opaque_mask_image_covers_where_it_is_dark_as_in_the_seed(make_stream, oneshot, mode):
    stream = make_stream()
    stream.update_single_layer(0, "a cat", mask=black_square_on_white(mode=mode))
    assert stream._scene.layers[0].mask.mean().item() == pytest.approx(0.25)  # 0.75 if read as grey
    # the one-shot pipeline reads it the same way (and cuts it at one half with use_boolean_mask)
    scene_mask = regions.to_mask_tensor(black_square_on_white(mode=mode), SIZE, SIZE, boolean_images=True, resize=True)
    assert scene_mask.mean().item() == pytest.approx(0.25)
    transparent = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    transparent.paste(Image.new("RGBA", (SIZE // 2, SIZE // 2), (200, 30, 30, 255)), (0, 0))
    assert regions.to_mask_tensor(transparent, SIZE, SIZE).mean().item() == pytest.approx(0.25)  # painted = covered


def test_mask_images_of_another_size_are_resized_and_the_one_shot_resizes_arrays_too():
    small = black_square_on_white(size=16, side=8)
    assert regions.to_mask_tensor(small, SIZE, SIZE).mean().item() == pytest.approx(0.25, abs=0.02)
    array = np.zeros((1, 1, 16, 16), np.float32)
    array[..., :8, :8] = 1.0
    assert regions.to_mask_tensor(array, SIZE, SIZE, resize=True).mean().item() == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ValueError, match=r"Resize it to the canvas size first"):
        regions.to_mask_tensor(array, SIZE, SIZE)


# ---- bootstrapping's mix, autoflush, lazy updates ------------------------------------------------------
def test_bootstrap_mix_steps_mixes_white_into_the_background_as_the_seed_defines(tiny):
    scene_ = blend.RegionScene(tiny, tiny.schedule.prepare((0, 4, 12, 25, 37), tiny.device, tiny.dtype), SIZE, SIZE,
                               bootstrap_mix_steps=1.5)
    photo = np.zeros((SIZE, SIZE, 3), np.uint8)
    photo[..., 1] = 180
    scene_.set_background(photo)
    mixed = scene_.bootstrap_latents(4)
    for slot in range(4):
        white_share = min(1.0, max(0.0, 1.5 - slot))  # the seed: clip(bootstrap_mix_steps - slot, 0, 1)
        expected = white_share * scene_.white + (1 - white_share) * scene_.background_image
        torch.testing.assert_close(mixed[slot:slot + 1], expected)


def test_bootstrap_mix_steps_matter_with_a_background_image_and_not_without(make_stream):
    def frame(mix, image):
        stream = make_stream(bootstrap_steps=2, bootstrap_mix_steps=mix, seed=3)
        if image:
            photo = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            stream.update_background(photo, prompt="")
        stream.update_single_layer(0, "a cat", mask=APPLE, mask_std=0.0)  # unblurred: it has weight at the noisy slots
        return run(stream, 5)

    assert torch.equal(frame(0.0, False), frame(2.0, False))  # white either way
    assert not torch.equal(frame(0.0, True), frame(2.0, True))


def test_autoflush_settles_after_a_prompt_change_and_not_after_a_stroke(make_stream):
    flushing, plain = make_stream(autoflush=True, seed=4), make_stream(seed=4)
    for stream in (flushing, plain):
        scene(stream)
    first = flushing(output_type="latent")  # the first frame settles: num_slots + 1 model calls
    assert flushing.unet_calls == flushing.num_slots + 1 and flushing.converged
    torch.testing.assert_close(first, run(plain, plain.num_slots + 1))
    flushing.update_single_layer(1, prompt="a yellow pear")
    flushing(output_type="latent")
    assert flushing.unet_calls == 2 * (flushing.num_slots + 1)
    flushing.update_single_layer(1, mask=box_mask(30, 60, 4, 40))  # a stroke: one frame, one call
    flushing(output_type="latent")
    assert flushing.unet_calls == 2 * (flushing.num_slots + 1) + 1


def test_update_holds_changes_until_commit_and_merges_requests_for_one_layer(make_stream):
    stream = make_stream()
    stream.update(background_prompt="a meadow", idx=0, prompt="a cat")
    stream.update(idx=0, mask=APPLE, mask_std=3.0)
    stream.update(idx=0, prompt="a dog")
    assert stream.is_dirty and stream.num_layers == 0
    stream(output_type="latent")  # a frame commits (and settles, as the seed's does)
    assert not stream.is_dirty and stream.background.prompt == "a meadow"
    layer = stream._scene.layers[0]
    assert (layer.prompt, layer.mask_std) == ("a dog", 3.0) and layer.mask.sum() == APPLE.sum()
    with pytest.warns(UserWarning, match="prompt_queue_capacity"):
        small = make_stream(prompt_queue_capacity=1)
        small.update(idx=0, prompt="a")
        small.update(idx=1, prompt="b")


def test_update_masks_and_register_all(make_stream):
    stream = make_stream()
    white = Image.new("RGB", (SIZE, SIZE), "white")
    stream.register_all(["a cat", "a dog"], [APPLE, PEAR], white, background_prompt="a room")
    assert [layer.mask_std for layer in stream._scene.layers] == [10.0, 10.0]  # register_all's default blur
    assert stream.background.image is white and stream.background.prompt == "a room"
    with pytest.warns(UserWarning, match="the last 1 layer"):
        stream.update_masks([PEAR])
    cat, dog = stream._scene.layers
    assert cat.mask.sum() == PEAR.sum() and dog.mask.sum() == 0 and cat.mask_std == stream.default_mask_std


# ---- has_i2t: captioning a background image given without a prompt -------------------------------------
def test_a_background_image_without_a_prompt_is_captioned_with_has_i2t(make_stream, tiny):
    seen = []

    def stand_in(image):
        seen.append(image.size)
        return "a stand-in caption"

    stream = semdraw_widget.StreamMultiDiffusion("cpu", model=tiny, height=SIZE, width=SIZE, has_i2t=True)
    stream.captioner = stand_in
    stream.update_background(Image.new("RGB", (SIZE, SIZE), "gray"))
    assert stream.background.prompt == "a stand-in caption" and seen == [(SIZE, SIZE)]
    stream.update_background(np.zeros((SIZE, SIZE, 3), np.uint8), prompt="given")  # a prompt given: no caption
    assert seen == [(SIZE, SIZE)] and stream.background.prompt == "given"
    plain = make_stream()  # has_i2t off (our stream default): the prompt is left as it was
    plain.update_background(Image.new("RGB", (SIZE, SIZE), "gray"))
    assert plain.background.prompt == ""
    smd = semdraw_widget.StableMultiDiffusionPipeline("cpu", model=tiny)  # has_i2t=True, the seed's default
    smd.captioner = stand_in
    smd(["a cat"], masks=[APPLE], background=Image.new("RGB", (SIZE, SIZE), "gray"), height=SIZE, width=SIZE, seed=1)
    assert len(seen) == 2


def test_captioning_without_its_weights_says_how_to_get_them_or_do_without(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    stream = semdraw_widget.StreamMultiDiffusion("cpu", model=tiny, height=SIZE, width=SIZE, has_i2t=True)
    with pytest.raises(loading.ModelNotFoundError) as caught:
        stream.update_background(Image.new("RGB", (SIZE, SIZE), "gray"))
    message = str(caught.value)
    assert "Salesforce/blip2-opt-2.7b" in message and "hf download Salesforce/blip2-opt-2.7b" in message
    assert "has_i2t=False" in message and "background_prompt=" in message
    assert stream.background.prompt == "" and stream._scene.background_image is None  # nothing changed


# ---- our numbers against the seed's formulas -------------------------------------------------------------
def seed_alphas_cumprod():
    """SD 1.5's training schedule as the seed's LCMScheduler holds it: scaled-linear betas, 1000 steps."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def test_sd15_slot_constants_are_the_seeds(oneshot):
    abar = seed_alphas_cumprod()
    lcm_timesteps = [999 - 20 * k for k in range(50)]  # the seed: LCMScheduler.set_timesteps(50)
    seed_t = [lcm_timesteps[i] for i in (0, 4, 12, 25, 37)]
    steps = oneshot.schedule.prepare(oneshot.t_index_list, oneshot.device, torch.float64)
    assert steps.timesteps.tolist() == seed_t == [999, 919, 759, 499, 259]
    for i, t in enumerate(seed_t):
        scaled = 10.0 * t  # LCM's boundary condition, timestep_scaling 10, sigma_data 0.5
        assert steps.c_skip[i].item() == pytest.approx(0.25 / (scaled**2 + 0.25), rel=1e-9)
        assert steps.c_out[i].item() == pytest.approx(scaled / math.sqrt(scaled**2 + 0.25), rel=1e-9)
        assert steps.alpha[i].item() == pytest.approx(math.sqrt(abar[t]), rel=1e-9)
        assert steps.beta[i].item() == pytest.approx(math.sqrt(1 - abar[t]), rel=1e-9)
        assert steps.noise_levels[i] == pytest.approx(math.sqrt(1 - abar[t]), rel=1e-9)  # the seed's noise_lvs


def seed_preprocess(masks, strengths, cover_alpha, noise_levels, mask_type, latent):
    """The seed's process_mask without blur, as we read it, in numpy: each mask decayed where any later (higher) one
    is > 0, times its strength, quantised per slot, then nearest-neighbour downsampled."""
    decayed = [np.where(masks[i + 1:].sum(0) > 0, m * cover_alpha, m) if i < len(masks) - 1 else m for i, m in enumerate(masks)]
    levels = np.asarray(noise_levels)
    following = np.append(levels[1:], 0.0)
    out = []
    for m, s in zip(decayed, strengths):
        m = m * s
        per_slot = []
        for lv, nxt in zip(levels, following):
            q = (m > lv).astype(np.float64) if mask_type == "discrete" else np.clip((m - nxt) / (lv - nxt), 0, 1)
            step = m.shape[0] // latent
            per_slot.append(q[::step, ::step])  # nearest: torch's 'nearest' takes floor(i * scale)
        out.append(per_slot)
    return np.asarray(out)


@pytest.mark.parametrize("mask_type", ["discrete", "continuous"])
def test_mask_preprocessing_is_the_seeds(oneshot, mask_type):
    rng = np.random.default_rng(0)
    masks = np.stack([APPLE.astype(np.float64), PEAR * rng.uniform(0.3, 1.0, (SIZE, SIZE))])
    steps = oneshot.schedule.prepare(oneshot.t_index_list, oneshot.device, torch.float64)
    ours = regions.preprocess_masks(torch.from_numpy(masks), [0.0, 0.0], [1.0, 0.9], steps.noise_levels, mask_type,
                                    (SIZE // 8, SIZE // 8), cover_alpha=0.3)
    expected = seed_preprocess(masks, [1.0, 0.9], 0.3, steps.noise_levels, mask_type, SIZE // 8)
    np.testing.assert_allclose(ours[:, :, 0].numpy(), expected, atol=1e-9)


def test_mask_blur_is_the_seeds_gaussian_away_from_the_edges():
    mask = np.zeros((SIZE, SIZE))
    mask[24:40, 24:40] = 1.0
    std = 2.0
    radius = math.ceil(3 * std)  # the seed: a kernel of 2 * ceil(3 std) + 1 taps
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / std) ** 2)
    taps /= taps.sum()
    rows = np.apply_along_axis(lambda r: np.convolve(r, taps, mode="same"), 1, mask)
    expected = np.apply_along_axis(lambda c: np.convolve(c, taps, mode="same"), 0, rows)
    ours = regions.gaussian_blur(torch.from_numpy(mask)[None].float(), [std])[0].double().numpy()
    inside = slice(radius, SIZE - radius)
    np.testing.assert_allclose(ours[inside, inside], expected[inside, inside], atol=1e-6)


def test_the_blend_is_the_seeds():
    torch.manual_seed(0)
    x0 = torch.randn(5, 3, 4, 8, 8, dtype=torch.float64)  # (slots, layers, C, h, w)
    masks = torch.rand(5, 3, 1, 8, 8, dtype=torch.float64) * (torch.rand(5, 3, 1, 8, 8) > 0.4)
    background = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    # the seed's one-shot blend: value = sum M x0, count = sum M; value / count where count > 0;
    # bg_mask = clip(1 - count, 0, 1); latent = (1 - bg_mask) latent + bg_mask background
    value, count = (masks * x0).sum(1), masks.sum(1)
    latent = torch.where(count > 0, value / count, value)
    bg_mask = (1 - count).clamp(0, 1)
    expected = (1 - bg_mask) * latent + bg_mask * background
    torch.testing.assert_close(blend.blend_x0(x0, masks, background), expected)


def test_do_blend_pastes_the_image_over_white_outside_the_masks_as_the_seed(oneshot):
    kwargs = dict(masks=[APPLE], height=SIZE, width=SIZE, seed=2, mask_stds=0.0, output_type="np")
    pasted, raw = oneshot(["a cat"], **kwargs), oneshot(["a cat"], do_blend=False, **kwargs)
    assert (pasted[~APPLE] == 255).all() and np.array_equal(pasted[APPLE], raw[APPLE])
    assert not (raw[~APPLE] == 255).all()
