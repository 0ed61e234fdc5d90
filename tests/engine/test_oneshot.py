import numpy as np
import pytest
import torch

from semdraw_widget.engine import tile_weights
from semdraw_widget.engine.oneshot import tile_starts

from engine_helpers import SIZE, box_mask


@pytest.mark.parametrize("height,width,tile", [(8, 8, 96), (64, 256, 96), (96, 160, 32), (33, 70, 16), (10, 17, 4)])
def test_tile_weights_sum_to_one_and_windows_overlap_by_half(height, width, tile):
    windows, weights = tile_weights(height, width, tile)
    assert weights.shape == (len(windows), height, width)
    assert torch.allclose(weights.sum(0), torch.ones(height, width), atol=1e-6)
    for (top, bottom, left, right), weight in zip(windows, weights):
        outside = torch.ones(height, width, dtype=torch.bool)
        outside[top:bottom, left:right] = False
        assert (weight[outside] == 0).all() and (weight[~outside] > 0).all()
    starts = tile_starts(width, tile)
    assert starts[0] == 0 and starts[-1] == max(0, width - tile)
    assert all(0 < b - a <= max(1, tile // 2) for a, b in zip(starts, starts[1:]))


def test_tile_weights_ramp_linearly_across_a_half_overlap():
    _, weights = tile_weights(1, 16, 8)  # windows at 0, 4, 8
    row = weights[1, 0]
    assert torch.allclose(row[4:8], torch.tensor([0.2, 0.4, 0.6, 0.8]), atol=1e-6)  # ramp ratios 1:4, 2:3, 3:2, 4:1
    assert torch.allclose(row[8:12], torch.tensor([0.8, 0.6, 0.4, 0.2]), atol=1e-6)


def test_panorama_wider_than_the_tile_runs(oneshot):
    image = oneshot.sample_panorama("the dolomites", height=SIZE, width=4 * SIZE, tile_size=SIZE, seed=1)
    assert image.size == (4 * SIZE, SIZE)
    assert np.asarray(image).std() > 0


def test_sample_and_region_calls_in_the_seed_style(oneshot):
    torch.manual_seed(2024)
    first = oneshot.sample("A photo of the dolomites", height=SIZE, width=SIZE)
    torch.manual_seed(2024)
    assert np.array_equal(np.asarray(first), np.asarray(oneshot.sample("A photo of the dolomites", height=SIZE, width=SIZE)))
    masks = np.stack([np.ones((SIZE, SIZE), bool), box_mask(0, 32, 0, 32), box_mask(32, 64, 32, 64)])
    image = oneshot(["background: city", "foreground: a cat", "foreground: a dog"], masks=masks, height=SIZE, width=SIZE, seed=3)
    assert image.size == (SIZE, SIZE)
    stacked = torch.from_numpy(masks[:, None])  # (P, 1, H, W) works too
    same = oneshot(["background: city", "foreground: a cat", "foreground: a dog"], masks=stacked, height=SIZE, width=SIZE, seed=3)
    assert np.array_equal(np.asarray(image), np.asarray(same))
    with pytest.raises(ValueError, match="one mask per prompt"):
        oneshot(["a", "b"], masks=masks, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="height must be a positive multiple of 8"):
        oneshot.sample("x", height=60, width=SIZE)


def test_guided_one_shot_differs_from_unguided(oneshot):
    kwargs = dict(height=SIZE, width=SIZE, seed=5, output_type="latent")
    plain = oneshot.sample("a cat", **kwargs)
    guided = oneshot.sample("a cat", negative_prompts="a dog", guidance_scale=4.0, **kwargs)
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided)
