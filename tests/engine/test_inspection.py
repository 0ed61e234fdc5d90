"""inspect_slots: what the last frame did at each slot, for learning how the stream works."""

import numpy as np
import pytest

from engine_helpers import APPLE, PEAR, SIZE, scene


def test_the_inspection_shows_each_slots_images_and_each_layers_weights(make_stream):
    stream = scene(make_stream())
    with pytest.raises(RuntimeError, match="no frame since the pipeline started"):
        stream.inspect_slots()
    for _ in range(stream.num_slots - 1):
        stream()
    frame = stream(output_type="np")
    seen = stream.inspect_slots()
    t = stream.num_slots
    assert len(seen.timesteps) == len(seen.noise_levels) == len(seen.inputs) == len(seen.estimates) == t
    assert seen.timesteps == sorted(seen.timesteps, reverse=True)  # noisiest first
    np.testing.assert_array_equal(np.asarray(seen.estimates[-1]), frame)  # the last slot's estimate is the frame
    assert seen.layer_weights.shape == (t, 2, SIZE, SIZE) and seen.layer_prompts == ["a red apple", "a green pear"]
    apple, pear = seen.weights("a red apple"), seen.weights(1)
    assert apple[:, ~_grown(APPLE, 8)].max() == 0 and pear[:, ~_grown(PEAR, 8)].max() == 0  # weight stays near the paint
    assert np.median(apple[-1][APPLE & ~PEAR]) > 0.9  # where the pear (above it) does not cover it
    assert apple[0][APPLE & PEAR].mean() < apple[0][APPLE & ~PEAR].mean()  # where it does: cover decay
    # a blurred edge joins in only at the quieter slots: the noisiest slot gives the apple the fewest pixels
    assert (apple[0] > 0).sum() < (apple[-1] > 0).sum()
    assert seen.background_weights.shape == (t, SIZE, SIZE) and seen.background_weights.max() > 0
    with pytest.raises(KeyError, match="no layer 'a plum'"):
        seen.weights("a plum")
    assert seen.weights("background") is seen.background_weights
    # the white latent fills exactly what the layers' weights leave short of 1
    total = seen.layer_weights.sum(axis=1) + seen.background_weights
    np.testing.assert_allclose(seen.fill_weights, 1 - np.minimum(total, 1), atol=1e-6)
    assert seen.fill_weights.max() == 0  # with a background prompt, nothing falls back to white
    sheet = seen.contact_sheet(cell=32)  # rows: inputs, estimates, 2 layers, background, fill; 2-pixel frames
    assert sheet.size == (150 + 34 * t, 20 + 34 * (2 + 2 + 1 + 1))
    stream.update_single_layer(1, mask_std=4.0)
    with pytest.raises(RuntimeError, match="changed since the last frame"):
        stream.inspect_slots()


def test_the_same_mask_sent_again_keeps_the_weights_shown(make_stream):
    """Brushing over painted area sends the same mask again: the inspection must still show the weights
    the frame blended with (they read zero once)."""
    stream = scene(make_stream())
    stream()
    before = stream.inspect_slots().weights(0)
    stream.update_single_layer(0, mask=APPLE)  # unchanged
    stream()
    np.testing.assert_array_equal(stream.inspect_slots().weights(0), before)
    assert before.max() > 0


def test_the_contact_sheet_keeps_a_wide_canvas_wide(make_stream):
    stream = make_stream(height=SIZE, width=2 * SIZE)
    stream.update_single_layer(0, prompt="a very long prompt about a red apple on a wooden table", mask=np.ones((SIZE, 2 * SIZE), bool))
    stream()
    sheet = stream.inspect_slots().contact_sheet(cell=64)
    assert sheet.size == (150 + 66 * stream.num_slots, 20 + 34 * (2 + 1 + 1))  # cells 64 x 32, as the canvas


def _grown(mask, by):
    """The mask grown by `by` pixels (a box's weights may spread that far: latent cells and blur)."""
    grown = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    grown[max(ys.min() - by, 0):ys.max() + by + 1, max(xs.min() - by, 0):xs.max() + by + 1] = True
    return grown
