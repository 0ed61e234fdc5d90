import warnings

import numpy as np
import pytest
import torch

from semdraw_widget.engine.loading import resolve_device

from engine_helpers import APPLE, PEAR, SIZE, box_mask, record_batch_sizes, run, scene


def test_same_seed_gives_identical_frames_and_another_seed_differs(make_stream):
    a, b = scene(make_stream(seed=7)), scene(make_stream(seed=7))
    frames_a = [a(output_type="latent") for _ in range(3)]
    frames_b = [b(output_type="latent") for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(frames_a, frames_b))
    c = scene(make_stream(seed=8))
    assert not torch.allclose(c(output_type="latent"), frames_a[0])
    a.reset_seed(8)
    assert torch.equal(a(output_type="latent"), scene(make_stream(seed=8))(output_type="latent"))


def test_layer_with_empty_mask_changes_nothing_and_removing_it_neither(make_stream):
    plain, extra = scene(make_stream()), scene(make_stream())
    extra.update_single_layer(2, prompt="a blue cup", mask=np.zeros((SIZE, SIZE), dtype=np.uint8))
    extra.update_single_layer(3, prompt="no mask at all")
    assert extra.num_layers == 4
    for _ in range(3):
        assert torch.equal(plain(output_type="latent"), extra(output_type="latent"))
    extra.remove_layer(3)
    extra.remove_layer(2)
    assert torch.equal(plain(output_type="latent"), extra(output_type="latent"))


def test_background_prompt_has_no_effect_under_one_full_unblurred_layer(make_stream):
    settings = dict(preprocess_mask_cover_alpha=0.0, bootstrap_steps=0)
    frames = []
    for background in ("a wooden table", "a starry night sky"):
        stream = make_stream(**settings)
        stream.update_background(prompt=background)
        stream.update_single_layer(0, prompt="a red apple", mask=np.ones((SIZE, SIZE)), mask_std=0.0, prompt_strength=1.0)
        frames.append(run(stream, 6))
    assert torch.equal(frames[0], frames[1])
    # ...and it does matter once the layer's prompt is mixed with it (the test can fail)
    stream = make_stream(**settings)
    stream.update_background(prompt="a starry night sky")
    stream.update_single_layer(0, prompt="a red apple", mask=np.ones((SIZE, SIZE)), mask_std=0.0, prompt_strength=0.5)
    assert not torch.allclose(run(stream, 6), frames[0])


@pytest.mark.parametrize("mask_type", ["continuous", "discrete", "semi-continuous"])
def test_still_scene_converges_to_the_one_shot_image(make_stream, oneshot, mask_type):
    stream = scene(make_stream(mask_type=mask_type, seed=11))
    frame = run(stream, stream.num_slots)
    image = oneshot(
        ["a red apple", "a green pear"], masks=[APPLE, PEAR], background_prompt="a wooden table", height=SIZE, width=SIZE,
        t_index_list=(0, 4, 12, 25, 37), mask_type=mask_type, mask_stds=[2.0, 0.0], prompt_strengths=0.95, seed=11,
        bootstrap_steps=1, bootstrap_leak_sensitivity=None, output_type="latent",
    )
    assert torch.allclose(frame, image, atol=1e-5, rtol=1e-5)
    assert torch.allclose(stream(output_type="latent"), frame, atol=1e-6)  # and it stays there


def test_background_image_stays_outside_the_layers(make_stream, tiny):
    stream = make_stream()
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[:, :, 0] = 200
    stream.update_background(image=image)
    stream.update_single_layer(0, prompt="a red apple", mask=box_mask(0, 24, 0, 24), mask_std=0.0)
    latent = run(stream, 5)
    expected = tiny.encode(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    assert torch.equal(latent[..., 4:, 4:], expected[..., 4:, 4:])
    assert not torch.allclose(latent[..., :3, :3], expected[..., :3, :3])
    stream.update_background(image=False)
    assert torch.equal(run(stream, 5)[..., 4:, 4:], stream._scene.white[..., 4:, 4:])


def test_empty_scene_is_white(make_stream, tiny):
    frame = make_stream()(output_type="np")
    white = tiny.decode(tiny.encode(torch.ones(1, 3, SIZE, SIZE)))
    assert np.array_equal(frame, (white[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def test_converged_after_T_still_frames_and_not_after_an_update(make_stream):
    stream = scene(make_stream())
    for _ in range(stream.num_slots - 1):
        stream()
        assert not stream.converged
    stream()
    assert stream.converged
    stream.update_single_layer(0, prompt="a red apple")  # unchanged: still converged
    assert stream.converged
    stream.update_single_layer(0, mask_strength=0.5)
    assert not stream.converged
    stream.flush()
    assert stream.converged
    fresh = scene(make_stream(fresh_noise=True))
    first = [fresh(output_type="latent") for _ in range(fresh.num_slots + 1)]
    assert not fresh.converged and not torch.allclose(first[-1], fresh(output_type="latent"))


def test_updates_recompute_only_what_changed(make_stream):
    stream = scene(make_stream())
    stream()
    bottom, apple, pear = stream._scene.stack()
    kept = apple.weights, pear.weights, bottom.weights
    stream.update_single_layer(1, prompt="a yellow pear")
    stream()
    assert apple.weights is kept[0] and pear.weights is kept[1] and bottom.weights is kept[2]
    stream.update_single_layer(1, mask=PEAR | box_mask(50, 64, 40, 64))  # more cover over the bottom layer only
    stream()
    assert apple.weights is kept[0] and pear.weights is not kept[1] and bottom.weights is not kept[2]


def test_output_types_and_profiling(make_stream):
    stream = scene(make_stream(profile=True))
    image = stream()
    assert image.size == (SIZE, SIZE)
    array = stream(output_type="np")
    assert array.dtype == np.uint8 and array.shape == (SIZE, SIZE, 3)
    tensor = stream(output_type="pt")
    assert tensor.dtype == torch.uint8 and tensor.shape == (SIZE, SIZE, 3)
    assert set(stream.timings) == {"unet", "blend", "decode"} and all(v >= 0 for v in stream.timings.values())
    with pytest.raises(ValueError, match="output_type"):
        stream(output_type="jpeg")


@pytest.mark.parametrize("cfg_type", ["full", "self"])
def test_guidance_modes_run_and_matter(make_stream, cfg_type):
    base = run(scene(make_stream()), 2)
    guided = make_stream(cfg_type=cfg_type, guidance_scale=3.0)
    scene(guided).update_single_layer(0, negative_prompt="blurry")
    out = run(guided, 2)
    assert torch.isfinite(out).all() and not torch.allclose(out, base)


def test_validation_messages(make_stream):
    with pytest.raises(ValueError, match=r"width must be a positive multiple of 8 \(got 500\); try 496 or 504"):
        make_stream(width=500)
    stream = make_stream()
    with pytest.raises(ValueError, match=r"\(64, 64\)"):
        stream.update_single_layer(0, prompt="x", mask=np.zeros((32, 32)))
    with pytest.raises(IndexError, match=r"use 0\.\.-1 to edit one, or 0 \(or None\) to add one on top"):
        stream.update_single_layer(-1, prompt="x")
    assert stream.num_layers == 0
    with pytest.raises(ValueError, match="cfg_type"):
        make_stream(cfg_type="double")


def test_overlong_prompt_warns_how_many_tokens_were_dropped(make_stream):
    stream = make_stream()
    long_prompt = "a" + " b" * 100  # one token per word in the tiny vocabulary: 101 + 2 special tokens
    with pytest.warns(UserWarning, match="the last 26 token"):
        stream.update_single_layer(0, prompt=long_prompt, mask=APPLE)
        stream()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream.update_single_layer(1, prompt="short", mask=PEAR)
        stream()


def test_device_spellings():
    assert resolve_device(0) == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_items_without_weight_at_their_slot_are_left_out_and_frames_do_not_change(make_stream, tiny, monkeypatch):
    from semdraw_widget.engine import blend

    def weak_scene(stream):
        stream.update_background(prompt="a wooden table")
        stream.update_single_layer(0, prompt="a red apple", mask=APPLE, mask_strength=0.3)  # no weight at the noisy slots
        stream.update_single_layer(1, prompt="a green pear", mask=PEAR)
        return stream

    sizes = record_batch_sizes(tiny, monkeypatch)
    skipping = weak_scene(make_stream())
    batch = skipping._scene.batch()
    assert batch.live is not None and len(batch.live) < skipping.num_slots * 3
    skipped = [skipping(output_type="latent") for _ in range(6)]
    assert sizes == [len(batch.live)] * 6

    monkeypatch.setattr(blend, "live_items", lambda masks, multiple=1: None)  # every item, as before this optimisation
    sizes.clear()
    full = weak_scene(make_stream())
    everything = [full(output_type="latent") for _ in range(6)]
    assert sizes == [full.num_slots * 3] * 6
    for a, b in zip(skipped, everything):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_one_shot_windows_leave_out_layers_that_do_not_reach_them(tiny, monkeypatch):
    from semdraw_widget.engine import StableMultiDiffusionPipeline, blend

    width = 3 * SIZE
    left = np.zeros((SIZE, width), dtype=bool)
    left[8:56, 4:40] = True  # only in the first window
    settings = dict(masks=[left], background_prompt="a meadow", height=SIZE, width=width, tile_size=SIZE, seed=3,
                    mask_stds=0.0, output_type="latent")
    sizes = record_batch_sizes(tiny, monkeypatch)
    pipe = StableMultiDiffusionPipeline("cpu", model=tiny)
    skipped = pipe(["a red apple"], **settings)
    assert min(sizes) == 1 and max(sizes) == 2  # background alone where the layer does not reach
    monkeypatch.setattr(blend, "live_items", lambda masks, multiple=1: None)
    sizes.clear()
    everything = pipe(["a red apple"], **settings)
    assert set(sizes) == {2}
    torch.testing.assert_close(skipped, everything, atol=1e-5, rtol=1e-5)


def test_a_step_where_no_layer_has_weight_makes_no_model_call(tiny, monkeypatch):
    from semdraw_widget.engine import StableMultiDiffusionPipeline, blend

    settings = dict(masks=[APPLE], height=SIZE, width=SIZE, seed=5, mask_strengths=0.3, mask_type="continuous",
                    output_type="latent")
    sizes = record_batch_sizes(tiny, monkeypatch)
    pipe = StableMultiDiffusionPipeline("cpu", model=tiny)
    skipped = pipe(["a red apple"], **settings)
    steps = len(tiny.default_t_index_list)
    assert 0 < len(sizes) < steps  # the noisiest steps had nothing to predict
    monkeypatch.setattr(blend, "live_items", lambda masks, multiple=1: None)
    sizes.clear()
    torch.testing.assert_close(skipped, pipe(["a red apple"], **settings), atol=1e-5, rtol=1e-5)
    assert len(sizes) == steps


def test_with_cuda_graphs_the_call_size_is_a_multiple_of_the_slots(make_stream, tiny, monkeypatch):
    """Graphs are captured per batch size: items without weight are added back up to a multiple of the slots."""
    from semdraw_widget.engine.blend import live_items

    weights = torch.zeros(5, 3, 1, 4, 4)
    weights[:, 0] = 1.0
    weights[3:, 1] = 1.0  # 5 + 2 items with weight
    assert live_items(weights) == (0, 3, 6, 9, 10, 12, 13)
    assert live_items(weights, multiple=5) == (0, 1, 2, 3, 4, 6, 9, 10, 12, 13)  # 3 items without weight added
    weights[:, 2] = 1.0
    weights[:3, 1] = 1.0
    assert live_items(weights) is None and live_items(weights, multiple=5) is None

    plain, graphed = make_stream(), make_stream()
    graphed._scene.call_multiple = graphed.num_slots  # what compile=... sets on a CUDA device
    for stream in (plain, graphed):
        stream.update_background(prompt="a wooden table")
        stream.update_single_layer(0, prompt="a red apple", mask=APPLE, mask_strength=0.3)
    assert graphed._scene.batch().num_calls % graphed.num_slots == 0
    assert graphed._scene.batch().num_calls > plain._scene.batch().num_calls
    for _ in range(3):
        torch.testing.assert_close(plain(output_type="latent"), graphed(output_type="latent"), atol=1e-5, rtol=1e-5)
