"""The demo model as an oracle: it paints what its words name, so these tests check that the engine puts each
prompt where it was painted -- region placement, layer order, the background prompt and image, the eraser, blur,
mask strength, seeds, settling -- by classifying the pixels (`demo/classifier.py`), not just invariants.

Each test fails on a wrong implementation: a blend that ignores the masks, a reversed layer order, a background
that falls back to white, a blur or mask strength that does nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semdraw_widget.engine.models.demo.classifier import class_indices
from semdraw_widget.engine.models.demo.evaluate import interior
from semdraw_widget.engine.models.demo.vocabulary import COLOURS, parse

SIZE = 256  # the size the demo model was trained at (32 x 32 latents)


@pytest.fixture
def stream(demo):
    from semdraw_widget.engine import StreamMultiDiffusion

    def make(size=SIZE, **kwargs):
        return StreamMultiDiffusion(demo, height=size, width=size, **kwargs)

    return make


def settle(stream) -> np.ndarray:
    frame = None
    for _ in range(stream.num_slots):
        frame = stream(output_type="np")
    return frame


# Where a painted square meets another region, the blur mixes them over its reach (3 sigma = 24 px at the
# default blur), and at the noisy slots only the square's core has weight. Tests of what a square shows look
# beyond that reach plus one latent cell.
INNER = 32


def colour_share(classifier, image: np.ndarray, where: np.ndarray, prompt: str, border: int = 16) -> float:
    """The share of the cells at least `border` px inside `where` that the classifier reads as the colour of `prompt`.

    Colours only: the model's textures are right in 85% of a region's cells (its model card), its colours in
    94%, so a colour is what a test can rely on to see where a prompt went."""
    found, _ = classifier.label_map(image)
    return float((found == class_indices(parse(prompt))[0])[interior(where, border)[4::8, 4::8]].mean())


LEFT = np.zeros((SIZE, SIZE), bool)
LEFT[:, : SIZE // 2] = True
SQUARE = np.zeros((SIZE, SIZE), bool)
SQUARE[48:208, 48:208] = True


def test_each_prompt_paints_where_it_was_painted(stream, classifier):
    pipe = stream()
    pipe.update_layers(["a red apple", "blue water waves"], masks=[LEFT, ~LEFT])
    image = settle(pipe)
    assert colour_share(classifier, image, LEFT, "red") > 0.9
    assert colour_share(classifier, image, ~LEFT, "blue waves") > 0.9


def test_the_top_layer_wins_where_two_overlap(stream, classifier):
    full = np.ones((SIZE, SIZE), bool)
    for bottom, top in (("yellow", "purple"), ("purple", "yellow"), ("red", "blue"), ("blue", "red")):
        pipe = stream()
        pipe.update_layers([bottom, top], masks=[full, SQUARE])
        image = settle(pipe)
        assert colour_share(classifier, image, SQUARE, top, INNER) > 0.9, (bottom, top)
        assert colour_share(classifier, image, ~SQUARE, bottom) > 0.9, (bottom, top)


def test_the_background_prompt_fills_every_uncovered_pixel_and_none_turns_white(stream, classifier):
    pipe = stream()
    pipe.update_background(prompt="green grass")
    pipe.update_single_layer(0, prompt="red", mask=SQUARE)
    image = settle(pipe)
    assert colour_share(classifier, image, ~SQUARE, "green grass") > 0.9
    assert colour_share(classifier, image, SQUARE, "red", INNER) > 0.5  # the background prompt eats into its edge
    assert colour_share(classifier, image, np.ones((SIZE, SIZE), bool), "white", 0) == 0.0


def test_a_background_image_is_kept_outside_the_layers(stream, classifier):
    from PIL import Image

    purple = np.zeros((SIZE, SIZE, 3), np.uint8)
    purple[:] = (np.array(COLOURS["purple"]) * 255).astype(np.uint8)
    pipe = stream()
    pipe.update_background(image=Image.fromarray(purple), prompt="")
    pipe.update_single_layer(0, prompt="yellow dots", mask=SQUARE)
    image = settle(pipe)
    assert colour_share(classifier, image, ~SQUARE, "purple") > 0.9  # the photograph's colour survives there
    assert colour_share(classifier, image, SQUARE, "yellow dots", INNER) > 0.9


def test_the_eraser_gives_the_area_back_to_the_background(demo, classifier):
    """Through the canvas and the browser's message path: paint a layer, then erase half of it."""
    from widget_helpers import from_browser, stroke_message

    import semdraw_widget as sdw
    from semdraw_widget.engine import StreamMultiDiffusion

    canvas = sdw.SemanticCanvas(pipeline=StreamMultiDiffusion(demo, height=SIZE, width=SIZE), width=SIZE, height=SIZE)
    try:
        canvas.background = {"prompt": "blue", "negative_prompt": ""}
        layer = canvas.add_layer("red")
        from_browser(canvas, *stroke_message(layer, 0, 0, SIZE, SIZE, 255))
        painted = np.asarray(canvas.render())
        assert colour_share(classifier, painted, np.ones((SIZE, SIZE), bool), "red") > 0.9
        from_browser(canvas, *stroke_message(layer, 0, 0, SIZE // 2, SIZE, 0, rev=2))  # the eraser: coverage 0
        erased = np.asarray(canvas.render())
        assert colour_share(classifier, erased, LEFT, "blue") > 0.9
        assert colour_share(classifier, erased, ~LEFT, "red") > 0.9
    finally:
        canvas.close()


def _transition_width(image: np.ndarray) -> int:
    """Columns over which the image goes from red (left) to blue (right): where redness is between 20% and
    80% of its range, averaged over the rows."""
    redness = (image[..., 0].astype(np.float32) - image[..., 2]).mean(axis=0)
    low, high = redness.min(), redness.max()
    fraction = (redness - low) / max(high - low, 1e-6)
    return int(((fraction > 0.2) & (fraction < 0.8)).sum())


def test_blur_makes_a_soft_boundary(stream):
    size = 192
    left = np.zeros((size, size), bool)
    left[:, : size // 2] = True
    widths = {}
    for blur in (0.0, 24.0):
        pipe = stream(size)
        pipe.update_layers(["red", "blue"], masks=[left, ~left], mask_stds=blur)
        widths[blur] = _transition_width(settle(pipe))
    assert widths[24.0] >= widths[0.0] + 8, widths


def test_a_weak_mask_strength_weakens_the_region(stream, classifier):
    shares = {}
    for strength in (1.0, 0.3):
        pipe = stream()
        pipe.update_background(prompt="blue")
        pipe.update_single_layer(0, prompt="red", mask=SQUARE, mask_strength=strength)
        shares[strength] = colour_share(classifier, settle(pipe), SQUARE, "red", INNER)
    assert shares[1.0] > 0.8 and shares[0.3] < 0.2, shares


def test_a_seed_changes_the_texture_but_not_the_colour(demo, classifier):
    from semdraw_widget.engine import StableMultiDiffusionPipeline

    pipe = StableMultiDiffusionPipeline(demo)
    images = [np.asarray(pipe.sample("white clouds in the sky", height=SIZE, width=SIZE, seed=seed)) for seed in (0, 1)]
    assert np.abs(images[0].astype(np.float32) - images[1]).mean() > 4.0  # different clouds
    for image in images:
        assert class_indices(classifier.classify(image))[0] == class_indices(parse("white clouds"))[0]
    mean_colours = [image.reshape(-1, 3).mean(0) for image in images]
    assert np.abs(mean_colours[0] - mean_colours[1]).max() < 20.0  # in 0..255 levels


def test_a_still_scene_settles_to_the_one_shot_image(demo, stream):
    from semdraw_widget.engine import StableMultiDiffusionPipeline

    pipe = stream()
    pipe.update_background(prompt="grey stone")
    pipe.update_layers(["orange checks", "purple"], masks=[LEFT, SQUARE])
    frame = settle(pipe).astype(np.float32)
    oneshot = StableMultiDiffusionPipeline(demo)
    image = oneshot(["orange checks", "purple"], masks=[LEFT, SQUARE], background_prompt="grey stone", height=SIZE,
                    width=SIZE, seed=pipe.seed, t_index_list=demo.default_t_index_list, mask_type="continuous",
                    mask_stds=pipe.default_mask_std, prompt_strengths=pipe.default_prompt_strength,
                    bootstrap_leak_sensitivity=None)
    assert np.abs(frame - np.asarray(image, np.float32)).mean() < 0.5


@pytest.mark.parametrize("prompt", ["a red apple", "green grass", "blue water waves", "a brick wall", "yellow dots"])
def test_a_prompt_paints_its_words_inside_a_longer_text(demo, classifier, prompt):
    from semdraw_widget.engine import StableMultiDiffusionPipeline

    image = np.asarray(StableMultiDiffusionPipeline(demo).sample(prompt, height=SIZE, width=SIZE, seed=0))
    assert class_indices(classifier.classify(image))[0] == class_indices(parse(prompt))[0]  # its colour word counts


def test_the_demo_model_loads_by_name_everywhere_the_tiny_one_does(demo):
    from semdraw_widget.engine import StableMultiDiffusionPipeline, StreamMultiDiffusion

    assert "Demo model" in demo.notice and "red" in demo.notice
    assert demo.vocabulary is not None and "clouds" in demo.vocabulary.suggestions
    assert StreamMultiDiffusion("cpu", hf_key="demo", height=64, width=64).model.vocabulary is not None
    assert StableMultiDiffusionPipeline.from_pretrained("demo", device="cpu").model.name == "sd15"
    assert torch.is_tensor(demo.encode_prompts(["red"])["encoder_hidden_states"])


HOUSE = np.zeros((SIZE, SIZE), bool)
HOUSE[88:208, 40:136] = True  # 96 x 120 px: a region a child paints, not a half of the canvas


@pytest.mark.parametrize("colour, background", [
    ("purple", "yellow"), ("blue", "green grass"), ("yellow", "green grass"), ("orange", "blue"), ("red", "blue"),
    ("red", "green grass"),
])
def test_a_middle_sized_region_takes_its_own_colour_not_the_background_s(stream, classifier, colour, background):
    """A region a child paints (96 x 120 px) takes its own colour over the background prompt's, in its core beyond
    the blur's reach, on average over three seeds and never less than half of it (one seed may leave a corner
    mottled: each set of demo weights has had such a seed for some pair). The earlier demo weights failed it
    twice: those that kept what their input showed from the slot 499 on painted red over blue as a dark green
    blob; the next ones muddied red towards brown or orange, and the ones after them turned yellow over grass
    partly orange."""
    shares = []
    for seed in (2024, 0, 1):
        pipe = stream(seed=seed)
        pipe.update_background(prompt=background)
        pipe.update_layers([colour], masks=[HOUSE])
        shares.append(colour_share(classifier, settle(pipe), HOUSE, colour, border=24))
    assert np.mean(shares) > 0.8 and min(shares) > 0.5, shares


@pytest.mark.parametrize("colour", ["yellow", "orange"])
def test_a_small_region_is_painted_not_lost(stream, classifier, colour):
    """A disc 80 px across (a sun in a sky) shows its colour: at the noisy slots only its core has weight, and the
    region grows to its edge at the slot before the last only if the model paints its words there whatever its
    input shows (the earlier demo weights lost such a disc, or kept a quarter of it). On average over three seeds,
    and never less than 0.6: its ragged edge reaches the core's outer cells for some seeds."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    disc = (x - SIZE // 2) ** 2 + (y - SIZE // 2) ** 2 < 40**2
    shares = []
    for seed in (2024, 0, 1):
        pipe = stream(seed=seed)
        pipe.update_background(prompt="blue")
        pipe.update_layers([colour], masks=[disc])
        shares.append(colour_share(classifier, settle(pipe), disc, colour, border=12))
    assert np.mean(shares) > 0.8 and min(shares) > 0.6, shares
