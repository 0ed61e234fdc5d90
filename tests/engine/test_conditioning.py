"""What conditions each layer (DESIGN: the algorithm). The background prompt, without a background image, is a
full-canvas bottom layer generated like the others: its own prompt and negative prompt condition it, not the
empty prompt. Residual ("self") guidance applies its noise where the model saw it, also in rolled slots."""

import numpy as np
import pytest
import torch

from engine_helpers import APPLE, SIZE, run

FULL = np.ones((SIZE, SIZE), dtype=bool)


@pytest.mark.parametrize("cfg_type", ["none", "full"])
def test_the_background_prompt_is_a_full_canvas_bottom_layer(make_stream, cfg_type):
    with_background = make_stream(cfg_type=cfg_type)
    with_background.update_background(prompt="a sunny beach", negative_prompt="blurry")
    # The same layer painted by hand: the whole canvas, unblurred, all of its own prompt.
    by_hand = make_stream(cfg_type=cfg_type)
    by_hand.update_single_layer(0, prompt="a sunny beach", negative_prompt="blurry", mask=FULL, mask_std=0.0,
                                prompt_strength=1.0)
    assert torch.equal(run(with_background, 5), run(by_hand, 5))


def test_the_background_prompt_decides_what_grows_where_nothing_is_painted(make_stream, oneshot):
    beach, forest = make_stream(), make_stream()
    beach.update_background(prompt="a sunny beach")
    forest.update_background(prompt="a dark forest at night")
    assert not torch.allclose(run(beach, 5), run(forest, 5))

    settings = dict(masks=[APPLE], height=SIZE, width=SIZE, seed=3, output_type="latent")
    images = [oneshot(["a red apple"], background_prompt=prompt, **settings) for prompt in ("a sunny beach", "a dark forest")]
    unpainted = (slice(None), slice(None), slice(6, 8), slice(0, 2))  # latent corner far from the apple's box
    assert (images[0][unpainted] - images[1][unpainted]).abs().max() > 1e-3


def test_self_guidance_is_blind_to_the_centring_roll(make_stream, monkeypatch):
    """Bootstrapped slots are rolled so a layer's mask sits at the centre, then rolled back. With a model
    that treats every pixel alike, that round trip must change nothing, residual guidance included."""
    from semdraw_widget.engine import blend

    def frames(roll):
        if not roll:
            def no_roll(masks):
                base = torch.arange(masks.shape[1] * masks.shape[2]).expand(masks.shape[0], -1)
                return base.to(masks.device), base.to(masks.device)
            monkeypatch.setattr(blend, "centring_roll_indices", no_roll)
        stream = make_stream(cfg_type="self", guidance_scale=2.0)
        monkeypatch.setattr(stream.predictor, "predict", lambda x, timesteps, cond: 0.3 * x)
        stream.update_single_layer(0, prompt="a red apple", mask=APPLE, mask_std=0.0)  # off-centre
        return run(stream, 5)

    rolled, unrolled = frames(roll=True), frames(roll=False)
    assert torch.allclose(rolled, unrolled, atol=1e-5), (rolled - unrolled).abs().max()


def test_a_background_image_array_follows_the_canvas_rules(make_stream):
    """The engine reads background arrays as the canvas does: floats in [0, 1], integers 0..255, checked."""
    as_uint8, as_float, as_int = make_stream(), make_stream(), make_stream()
    green = np.zeros((SIZE, SIZE, 3), np.uint8)
    green[..., 1] = 200
    as_uint8.update_background(image=green)
    as_float.update_background(image=green / 255.0)
    as_int.update_background(image=green.astype(np.int64))
    assert torch.allclose(as_uint8._scene.background_image, as_float._scene.background_image, atol=1e-5)
    assert torch.equal(as_uint8._scene.background_image, as_int._scene.background_image)
    for bad in (np.full((SIZE, SIZE, 3), np.nan), np.full((SIZE, SIZE, 3), 300), np.zeros((3, SIZE, SIZE))):
        with pytest.raises(ValueError, match="background image"):
            make_stream().update_background(image=bad)


@pytest.mark.parametrize("mask_type", ["discrete", "continuous"])
def test_with_a_background_prompt_no_painted_pixel_falls_back_to_white(oneshot, mask_type):
    """The background prompt takes what the painted layers leave at each slot, 1 - min(1, sum of their
    weights): inside a painted square, where cover decay and quantisation used to zero the background's own
    weight at the noisy slots while the layer had none yet, parts of the square took the white latent."""
    square = np.zeros((256, 256), dtype=bool)
    square[64:192, 64:192] = True
    latent = oneshot(["a red apple"], masks=[square], background_prompt="a meadow", height=256, width=256, seed=0,
                     mask_type=mask_type, output_type="latent")
    white = oneshot.model.encode(torch.ones(1, 3, 256, 256))
    equal_to_white = (latent - white).abs().amax(dim=1) < 1e-6
    assert not equal_to_white.any()


def test_the_background_prompt_weighs_what_the_painted_layers_leave(make_stream):
    stream = make_stream()
    stream.update_background(prompt="a meadow")
    half = np.zeros((SIZE, SIZE), dtype=bool)
    half[:, : SIZE // 2] = True
    stream.update_single_layer(0, prompt="a red apple", mask=half, mask_strength=0.5, mask_std=4.0)
    batch = stream._scene.batch()
    background, painted = batch.masks[:, 0], batch.masks[:, 1]
    assert torch.allclose(background, 1.0 - painted.clamp(max=1.0))
    assert torch.allclose((background + painted).amin(), torch.tensor(1.0))  # every pixel fully weighted, every slot
