"""The demo model's training data: the vocabulary, the captions, the tokenizer and the world's images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semdraw_widget.engine.models.demo import captions, world
from semdraw_widget.engine.models.demo.vocabulary import COLOURS, TEXTURES, Material, all_materials, known_words, parse


@pytest.mark.parametrize(
    "prompt, colour, texture",
    [
        ("a red apple", "red", None),
        ("blue water waves", "blue", "waves"),
        ("A Field of GREEN grass, please", "green", "grass"),
        ("a blue sky with white clouds", "blue", "clouds"),  # the first colour word counts
        ("stripes, red and yellow", "red", "stripes"),
        ("gray cobblestones", "grey", "stone"),
        ("a house", None, None),
        ("", None, None),
        ("reddish stripy", None, "stripes"),  # only whole words count
    ],
)
def test_a_prompt_names_its_first_colour_and_first_texture(prompt, colour, texture):
    assert parse(prompt) == Material(colour, texture)


def test_a_texture_without_a_colour_takes_its_own_and_no_word_is_neutral():
    assert Material(None, "grass").colour_class == "green"
    assert Material(None, "waves").colour_class == "blue"
    assert Material(None, None).colour_class == "neutral"
    assert known_words("a house by the sea") == ["sea"]


def test_every_caption_parses_back_to_its_material():
    rng = np.random.default_rng(0)
    for material in all_materials():
        for _ in range(20):
            text = captions.caption(material, rng)
            got = parse(text)
            assert (got.colour_class, got.texture_class) == (material.colour_class, material.texture_class), text


def test_the_tokenizer_reads_each_known_word_as_one_token_and_spells_out_others(tmp_path):
    tokenizer = captions.write_tokenizer(tmp_path / "tokenizer")
    assert tokenizer.tokenize("a red apple with blue water") == ["a</w>", "red</w>", "apple</w>", "with</w>", "blue</w>", "water</w>"]
    for word in ("checkerboard", "cobblestones", "grey", "gray", "violet", "stripes"):
        assert tokenizer.tokenize(word) == [word + "</w>"]
    # a word it has never seen falls back to pieces, as CLIP's tokenizer does
    assert len(tokenizer.tokenize("zebra")) > 1
    assert "red</w>" not in tokenizer.tokenize("reddish")


def _share_near(image: np.ndarray, rgb, tolerance: float = 0.12) -> float:
    """Share of pixels within `tolerance` (per channel, after lighting) of `rgb`."""
    return float((np.abs(image - np.asarray(rgb)) < tolerance).all(-1).mean())


@pytest.mark.parametrize("colour", list(COLOURS))
def test_an_image_shows_the_colour_its_caption_names(colour):
    rng = np.random.default_rng(1)
    plain = world.render(Material(colour, None), 64, 64, rng)
    assert _share_near(plain, COLOURS[colour]) > 0.95
    for texture in TEXTURES:  # a texture keeps the colour as a large part of the image, about the largest
        textured = world.render(Material(colour, texture), 128, 128, rng)
        near = {name: _share_near(textured, rgb) for name, rgb in COLOURS.items()}
        assert near[colour] > 0.3 and near[colour] > max(near.values()) - 0.15, (texture, near)


def _correlation(luma: np.ndarray, dx: int, dy: int) -> float:
    """Correlation of an image's brightness with itself shifted by (dx, dy) pixels."""
    shifted = np.roll(luma, (dy, dx), axis=(0, 1))[32:-32, 32:-32]
    inner = luma[32:-32, 32:-32]
    return float(np.corrcoef(inner.ravel(), shifted.ravel())[0, 1])


def test_textures_look_like_their_names():
    rng = np.random.default_rng(2)
    luma = np.array([0.3, 0.59, 0.11])
    plain = world.render(Material("red", None), 128, 128, rng) @ luma
    images = {texture: world.render(Material("red", texture), 128, 128, rng) @ luma for texture in TEXTURES}
    for texture, image in images.items():
        assert image.std() > 3 * plain.std(), texture  # every texture has marks; plain has grain only
    tile = world.TILE
    # diagonal stripes: half a tile along x inverts them, half a tile along the other diagonal too
    assert _correlation(images["stripes"], tile // 2, 0) < -0.5
    assert _correlation(images["stripes"], tile // 2, -tile // 2) > 0.8
    # checks: half a tile along either axis inverts them, along both does not
    assert _correlation(images["checks"], tile // 2, 0) < -0.5 and _correlation(images["checks"], tile // 2, tile // 2) > 0.8
    # the repeating textures repeat every tile (waves every two tiles across)
    for texture in ("stripes", "dots", "checks", "brick"):
        assert _correlation(images[texture], tile, 0) > 0.7 and _correlation(images[texture], 0, tile) > 0.7, texture
    assert _correlation(images["waves"], 2 * tile, 0) > 0.7 and _correlation(images["waves"], 0, tile) > 0.7
    # clouds: rows of clouds half a repeat high, a cloud every repeat across, every other row shifted by half
    repeat = world.REPEAT
    assert _correlation(images["clouds"], repeat, 0) > 0.7 and _correlation(images["clouds"], repeat // 2, repeat // 2) > 0.7
    assert _correlation(images["clouds"], repeat // 2, 0) < 0.2 and _correlation(images["clouds"], 0, repeat // 2) < 0.2


def test_the_same_seed_draws_the_same_image_and_another_seed_moves_the_texture_not_the_colour():
    material = Material("purple", "dots")
    first = world.render(material, 96, 96, np.random.default_rng(5))
    assert np.array_equal(first, world.render(material, 96, 96, np.random.default_rng(5)))
    other = world.render(material, 96, 96, np.random.default_rng(6))
    assert np.abs(first - other).mean() > 0.02
    assert np.abs(np.median(first, (0, 1)) - np.median(other, (0, 1))).max() < 0.1


@pytest.mark.parametrize("texture", ["stripes", "dots", "checks", "waves", "brick", "stone"])
def test_anchored_textures_put_their_marks_on_one_grid_in_every_picture(texture):
    marks = [world.render_marked(Material("red", texture), 64, 64, np.random.default_rng(seed), anchored=True)[1]
             for seed in (1, 2)]
    np.testing.assert_array_equal(marks[0], marks[1])
    np.testing.assert_allclose(marks[0], np.roll(marks[0], world.REPEAT, axis=(0, 1)), atol=1e-5)  # the grid repeats
    free = [world.render_marked(Material("red", texture), 64, 64, np.random.default_rng(seed))[1] for seed in range(6)]
    assert any(not np.array_equal(free[0], other) for other in free[1:])  # unanchored, the offset is drawn


def test_anchored_clouds_sit_in_the_same_places_and_every_patch_shows_clouds():
    """Clouds vary only in size, so a region of clouds, however small, shows clouds where the model expects them."""
    def marks(seed, anchored):
        return world.render_marked(Material("blue", "clouds"), 96, 96, np.random.default_rng(seed), anchored=anchored)[1]

    anchored = np.stack([marks(seed, True) for seed in range(6)])
    always, never = anchored.min(0) > 0.99, anchored.max(0) < 0.01
    assert always.mean() > 0.1 and never.mean() > 0.3  # cloud centres in every picture, open sky in none
    for picture in [*anchored, marks(7, False)]:
        covers = [picture[y:y + 32, x:x + 32].mean() for y in range(0, 65, 4) for x in range(0, 65, 4)]
        assert min(covers) > 0.2


def _composites(recipe, seed: int, count: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """(picture, material alone) of `count` composites of "red" as the denoiser's pool draws them for `recipe`."""
    from semdraw_widget.engine.models.demo import train

    pool = train.LatentPool.__new__(train.LatentPool)  # only what `_picture` reads
    pool.recipe, pool.rng = recipe, np.random.default_rng(seed)
    return [pool._picture(Material("red", None), mixed=True) for _ in range(count)]


def test_composites_for_the_denoiser_draw_regions_of_the_recipe_s_size():
    from semdraw_widget.engine.models.demo import train

    masks = world.random_shapes(200, 200, 50, np.random.default_rng(0), radii=(0.02, 0.05))
    rows, columns = masks.any(2).sum(1), masks.any(1).sum(1)
    assert rows.max() <= 2 * 0.05 * 200 + 1 and columns.max() <= 2 * 0.05 * 200 + 1

    def changed_share(radii):
        pictures = _composites(train.Recipe(composite_radii=radii, caption_inside=0.0), seed=1)
        return np.mean([np.abs(picture - alone).max(2).__gt__(0.2).mean() for picture, alone in pictures])

    assert changed_share((0.02, 0.05)) < 0.05 < 0.15 < changed_share(train.Recipe().composite_radii)


def test_composites_with_the_caption_inside_show_its_material_in_one_region_only():
    from semdraw_widget.engine.models.demo import train

    def pictures(caption_inside, seed=2):
        return _composites(train.Recipe(caption_inside=caption_inside), seed)

    def shown(picture, alone):  # the share of the picture that shows the captioned material itself
        return np.mean(np.all(picture == alone, axis=-1))

    for picture, alone in pictures(1.0):
        assert 0.01 < shown(picture, alone) < 0.4  # one region of it; other materials around
    assert min(shown(picture, alone) for picture, alone in pictures(0.0)) > 0.6  # the caption around, as before
    # off, the option draws nothing: recipes without it keep their random stream, hence their weights
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(pictures(0.0, seed=4), [
        world.composite_over(rng, 256, 256, background=Material("red", None), shapes=(1, 3), anchored=True)
        for rng in [np.random.default_rng(4)] for _ in range(12)]))


def test_the_plain_share_captions_more_pictures_with_plain_colours_and_draws_nothing_when_off():
    from semdraw_widget.engine.models.demo import train

    def captions_drawn(plain_share, seed=5, count=600):
        pool = train.LatentPool.__new__(train.LatentPool)  # only what `_draw` reads
        pool.recipe, pool.rng, pool.materials = train.Recipe(plain_share=plain_share), np.random.default_rng(seed), all_materials()
        return [pool._draw() for _ in range(count)]

    def plain(materials):
        return [m for m in materials if m.colour is not None and m.texture is None]

    assert len(plain(captions_drawn(0.0))) < 0.15 * 600  # ten plain colours among 99 materials
    more = plain(captions_drawn(0.5))
    assert len(more) > 0.45 * 600 and {m.colour for m in more} == set(COLOURS)
    # off, the option draws nothing: recipes without it keep their random stream, hence their weights
    rng, materials = np.random.default_rng(5), all_materials()
    assert captions_drawn(0.0) == [Material(None, None) if rng.random() < 0.04 else materials[rng.integers(len(materials))]
                                   for _ in range(600)]


def test_growing_a_material_takes_a_band_of_its_neighbours_and_leaves_the_rest():
    base, other = np.full((64, 64, 3), 0.8, np.float32), np.full((64, 64, 3), 0.2, np.float32)
    picture = other.copy()
    picture[20:40, 10:30] = base[20:40, 10:30]  # the material shows in one square
    grown = world.grow_into_neighbours(picture, base, 8)
    expected = np.zeros((64, 64), bool)
    expected[12:48, 2:38] = True  # the square, 8 px further on every side
    assert np.array_equal(np.all(grown == base, axis=-1), expected)
    assert np.array_equal(grown[~expected], picture[~expected])  # the rest as it was
    assert world.grow_into_neighbours(picture, base, 0) is picture
    assert world.grow_into_neighbours(other, base, 8) is other  # nothing of the material to grow


def test_with_growth_a_composite_s_quiet_target_is_its_picture_with_the_caption_grown():
    from semdraw_widget.engine.models.demo import train

    class Encoder:  # stands for the autoencoder: a latent pixel is the mean of its 8 x 8 cell
        def encode(self, images):
            pooled = torch.nn.functional.avg_pool2d(images, 8)
            return type("Encoded", (), {"latents": torch.cat([pooled, pooled[:, :1]], 1)})()

    def pool(grow_pixels):
        recipe = train.Recipe(grow_pixels=grow_pixels, composites=0.5, pool_images=24, caption_inside=0.0)
        return train.LatentPool(Encoder(), recipe, np.random.default_rng(6))

    plain, grown = pool(0), pool(8)
    assert plain.grown is plain.latents  # without growth, nothing is encoded twice or changed
    assert torch.equal(grown.latents, plain.latents) and torch.equal(grown.alone, plain.alone)  # the same draws
    mixed = grown.mixed
    assert 0 < mixed.sum() < len(mixed)
    assert torch.equal(grown.grown[~mixed], grown.latents[~mixed])  # a single material has no neighbours
    changed = (grown.grown[mixed] - grown.latents[mixed]).abs().amax(1) > 1e-6
    assert changed.any(dim=(1, 2)).all()  # every composite's regions lose a band to the caption...
    # ... towards the caption's own picture: where it changed, the grown target is nearer its material alone
    def gap(latents):
        return (latents[mixed] - grown.alone[mixed]).abs().amax(1)[changed]

    assert (gap(grown.grown) < 1e-5).float().mean() > 0.3  # whole cells taken...
    assert gap(grown.grown).sum() < 0.5 * gap(grown.latents).sum()  # ... and part ones, on the whole
    others = (grown.latents[mixed] - grown.alone[mixed]).abs().amax(1) > 1e-6  # other materials' cells
    assert (~changed[others]).float().mean() > 0.3  # beyond the band they stay as they were
    # the quiet slot learns the grown picture, the noisy ones the material alone, a single material itself
    x0, alone, labels, batch_mixed, batch_grown = grown.batch(64, 16)
    t = torch.tensor([259, 999] * 32)
    wanted = train.targets(x0, alone, batch_mixed, t, grown.recipe, batch_grown)
    quiet, noisy = batch_mixed & (t < 400), batch_mixed & (t >= 400)
    assert quiet.any() and noisy.any()
    assert torch.equal(wanted[quiet], batch_grown[quiet]) and torch.equal(wanted[noisy], alone[noisy])
    assert torch.equal(wanted[~batch_mixed], x0[~batch_mixed])
    # a run that resumes from a checkpoint keeps the grown targets
    for saved in (plain, grown):
        resumed = train.LatentPool(Encoder(), saved.recipe, np.random.default_rng(0), saved.saved())
        assert torch.equal(resumed.grown, saved.grown) and (resumed.grown is resumed.latents) == (saved is plain)


def test_the_denoiser_s_crops_start_on_the_anchored_grid():
    from semdraw_widget.engine.models.demo import train

    class Pool(train.LatentPool):
        def __init__(self, recipe):  # only what `batch` reads: latents that number their own positions
            self.recipe, self.rng = recipe, np.random.default_rng(0)
            self.latents = self.alone = self.grown = torch.arange(32.0).view(1, 1, 1, 32).expand(3, 4, 32, 32)
            self.labels, self.mixed, self.scaling_factor = [Material("red", None)] * 3, torch.zeros(3, dtype=torch.bool), 1.0

    starts = Pool(train.Recipe()).batch(200, 16)[0][:, 0, 0, 0]
    assert set(starts.tolist()) == {0.0, 4.0, 8.0, 12.0, 16.0}
    starts = Pool(train.Recipe(anchored_textures=False)).batch(200, 16)[0][:, 0, 0, 0]
    assert len(set(starts.tolist())) == 17


def test_autoencoder_samples_cover_materials_composites_and_free_colours():
    rng = np.random.default_rng(3)
    images = [world.autoencoder_sample(rng, 64, 64) for _ in range(40)]
    assert all(image.shape == (64, 64, 3) and image.dtype == np.float32 for image in images)
    assert all(0.0 <= image.min() and image.max() <= 1.0 for image in images)
