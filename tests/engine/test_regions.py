import numpy as np
import pytest
import torch
from PIL import Image

from semdraw_widget.engine import regions

LEVELS = (0.9, 0.5)
VALUES = torch.tensor([0.0, 0.3, 0.5, 0.7, 0.95, 1.0]).view(1, 1, 6)


def test_mask_conversion_accepts_the_documented_inputs():
    grey = np.full((8, 16), 51, dtype=np.uint8)
    assert torch.allclose(regions.to_mask_tensor(grey, 8, 16), torch.full((8, 16), 0.2))
    boolean = np.zeros((1, 8, 16), dtype=bool)
    boolean[0, 2, 3] = True
    out = regions.to_mask_tensor(boolean, 8, 16)
    assert out.shape == (8, 16) and out.dtype == torch.float32 and out.sum() == 1 and out[2, 3] == 1
    assert torch.equal(regions.to_mask_tensor(torch.full((8, 16), 0.3), 8, 16), torch.full((8, 16), 0.3))  # not 8-bit
    pil = Image.fromarray(np.full((8, 16), 0, dtype=np.uint8))  # the seed's rule: an opaque image covers where dark
    assert torch.equal(regions.to_mask_tensor(pil, 8, 16), torch.ones(8, 16))


@pytest.mark.parametrize(
    "mask, expected",
    [
        (torch.full((8, 16), 200, dtype=torch.uint8), 200 / 255),  # 0..255 like numpy uint8
        (torch.full((8, 16), 2, dtype=torch.uint8), 2 / 255),  # 0..255 coverage, as numpy uint8
        (np.ones((8, 16), np.int32), 1.0),  # other integers are fractions, as on the canvas
        (Image.new("RGBA", (16, 8), (255, 255, 255, 60)), 60 / 255),  # alpha, as on the canvas
        (Image.new("F", (16, 8), 0.5), 0.5),
        (torch.full((1, 8, 16), 0.25, dtype=torch.bfloat16), 0.25),
    ],
)
def test_masks_follow_the_canvas_rules(mask, expected):
    from semdraw_widget.coverage import to_coverage

    out = regions.to_mask_tensor(mask, 8, 16)
    assert torch.allclose(out, torch.full((8, 16), expected))
    assert (to_coverage(mask, 8, 16) == round(expected * 255)).all()  # the canvas reads the same coverage


@pytest.mark.parametrize(
    "mask, needle",
    [
        (np.full((8, 16), np.nan), "NaN"),  # would give black frames
        (torch.full((8, 16), 2.0), r"\[0, 1\]"),  # not clamped: a mistake upstream
        (np.full((8, 16), -1, np.int64), r"\[0, 1\]"),
        (np.full((8, 16), None), "real numbers"),
    ],
)
def test_bad_masks_are_rejected_as_on_the_canvas(mask, needle):
    with pytest.raises(ValueError, match=needle):
        regions.to_mask_tensor(mask, 8, 16)


def test_wrong_mask_shape_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(height, width\) = \(8, 16\)"):
        regions.to_mask_tensor(np.zeros((16, 8)), 8, 16)
    with pytest.raises(ValueError, match=r"\(1, 8, 16\)"):
        regions.to_mask_tensor(np.zeros((2, 8, 16)), 8, 16)


def test_cover_decay_multiplies_only_where_a_higher_layer_covers():
    masks = torch.tensor([[[1.0, 1.0, 1.0, 0.5]], [[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.2, 0.0]]])
    out = regions.cover_decay(masks, 0.3)
    expected = torch.tensor([[[1.0, 0.3, 0.3, 0.5]], [[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.2, 0.0]]])
    assert torch.allclose(out, expected)
    assert torch.equal(regions.cover_decay(masks, 0.0)[0], torch.tensor([[1.0, 0.0, 0.0, 0.5]]))


def test_blur_sigma_zero_is_identity_and_blur_keeps_constants_and_matches_a_gaussian():
    masks = torch.zeros(2, 21, 21)
    masks[:, 10, 10] = 1.0
    out = regions.gaussian_blur(masks, [0.0, 2.0])
    assert torch.equal(out[0], masks[0])
    x = torch.arange(-10, 11, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / 2.0) ** 2)
    g = g[4:17] / g[4:17].sum()  # radius ceil(3 sigma) = 6
    assert torch.allclose(out[1, 10, 4:17].double(), g * g[6], atol=1e-6)
    assert abs(out[1].sum().item() - 1.0) < 1e-5
    assert torch.allclose(regions.gaussian_blur(torch.ones(1, 9, 9), [3.0]), torch.ones(1, 9, 9), atol=1e-6)


def test_quantisation_by_hand_for_each_mask_type():
    discrete = regions.quantize_masks(VALUES, LEVELS, "discrete")[0, :, 0]
    assert torch.equal(discrete, torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1.0]]))
    continuous = regions.quantize_masks(VALUES, LEVELS, "continuous")[0, :, 0]
    assert torch.allclose(continuous, torch.tensor([[0, 0, 0, 0.5, 1, 1], [0, 0.6, 1, 1, 1, 1.0]]))
    semi = regions.quantize_masks(VALUES, LEVELS, "semi-continuous")[0, :, 0]
    assert torch.allclose(semi, torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0.6, 1, 1, 1, 1.0]]))
    with pytest.raises(ValueError, match="mask_type"):
        regions.quantize_masks(VALUES, LEVELS, "fuzzy")


def test_downsample_is_nearest_neighbour():
    image = torch.arange(256.0).view(1, 16, 16)
    out = regions.downsample(image, 2, 2)
    assert torch.equal(out, torch.tensor([[[0.0, 8.0], [128.0, 136.0]]]))


@pytest.mark.parametrize("size, latent", [((64, 96), (8, 12)), ((50, 70), (7, 9)), ((16, 16), (16, 16))])
@pytest.mark.parametrize("mask_type", regions.MASK_TYPES)
def test_preprocess_samples_the_blur_as_blurring_every_pixel_then_downsampling_would(size, latent, mask_type):
    """The five steps in their written order, against preprocess_masks's shortcut (only the kept pixels blurred),
    at an 8x ratio, an uneven one and none; blurs of several widths and none; strengths and cover decay."""
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, *size, generator=generator) > 0.6).float() * torch.rand(3, 1, 1, generator=generator)
    masks[1, : size[0] // 2] = 1.0  # a solid block whose blurred edge crosses the levels
    stds, strengths, levels = [2.0, 0.0, 5.5], [1.0, 0.7, 0.9], (0.95, 0.6, 0.3)
    covered = regions.covered_by_higher(masks)
    in_order = torch.where(covered, masks * 0.3, masks)
    in_order = regions.gaussian_blur(in_order, stds) * torch.tensor(strengths).view(-1, 1, 1)
    in_order = regions.downsample(regions.quantize_masks(in_order, levels, mask_type), *latent)[:, :, None]
    out = regions.preprocess_masks(masks, stds, strengths, levels, mask_type, latent, cover_alpha=0.3)
    assert out.shape == in_order.shape
    assert torch.allclose(out, in_order, atol=1e-5)


def test_preprocess_applies_cover_blur_strength_quantise_downsample_in_order():
    masks = torch.zeros(2, 16, 16)
    masks[0] = 1.0
    masks[1, :, 8:] = 1.0
    out = regions.preprocess_masks(masks, [0.0, 0.0], [1.0, 0.8], LEVELS, "continuous", (2, 2), cover_alpha=0.3)
    assert out.shape == (2, 2, 1, 2, 2)
    # bottom layer: 1 uncovered, 0.3 where covered -> slot 0: clip((m-0.5)/0.4), slot 1: clip(m/0.5)
    assert torch.allclose(out[0, :, 0], torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.6], [1.0, 0.6]]]))
    # top layer at strength 0.8: slot 0 -> 0.75, slot 1 -> 1
    assert torch.allclose(out[1, :, 0], torch.tensor([[[0.0, 0.75], [0.0, 0.75]], [[0.0, 1.0], [0.0, 1.0]]]))
