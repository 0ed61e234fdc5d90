"""The demo model's synthetic world: images of coloured textures, drawn procedurally.

`render(material, height, width, rng)` paints a whole image of one material (a colour and a texture,
see `vocabulary.py`). Each texture is a pattern p(x, y) in [0, 1] that mixes the base colour towards
a contrast colour (lighter for dark colours, darker for light ones), so the base colour stays what a
region reads as. What varies from image to image, as in a photograph, is where the texture's marks sit
(its offset; the denoiser's pictures keep one, see `render`), how big clouds are, how tall grass grows,
each stone's tone, the lighting (a little brightness and a gentle gradient) and a little grain; what
never varies is the colour of a word. So a seed changes texture but not colours.

`composite(rng, ...)` lays several materials out in random shapes, and `random_photo` draws
free-form colour fields: the autoencoder learns from both, so it also encodes boundaries and
photographs given as background images.

Sizes are in pixels of the image; textures keep their size in pixels whatever the canvas size.
"""

from __future__ import annotations

import numpy as np

from .vocabulary import COLOURS, TEXTURES, Material, all_materials

CELL = 8  # pixels: the autoencoder's cell (one latent pixel)
TILE = 2 * CELL  # pixels: the period of every texture (the smallest repeat the autoencoder's codes can draw)
REPEAT = 4 * CELL  # pixels: every texture's pattern repeats on this grid (waves' and stones' period; the others' divides it)
# How far each texture's pattern moves the base colour towards its contrast colour.
MIX = {"stripes": 0.8, "dots": 0.9, "checks": 0.8, "waves": 0.7, "grass": 0.75, "clouds": 0.85, "brick": 0.9, "stone": 0.85}


def contrast(rgb: np.ndarray) -> np.ndarray:
    """The colour a texture's marks take over `rgb`: towards white for dark colours, darker for light ones."""
    luminance = float(rgb @ np.array([0.3, 0.59, 0.11]))
    return rgb + (1.0 - rgb) * 0.6 if luminance < 0.55 else rgb * 0.55


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x, y


def _value_noise(height: int, width: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [0, 1]: random values on a grid of `cell` pixels, bilinearly interpolated."""
    gh, gw = int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    oy, ox = rng.random(2) * cell
    y = (np.arange(height, dtype=np.float32) + oy) / cell
    x = (np.arange(width, dtype=np.float32) + ox) / cell
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep: no creases at cell borders
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def pattern(texture: str, height: int, width: int, rng: np.random.Generator,
            anchored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(p, shade): the texture's pattern in [0, 1] and a per-pixel brightness factor.

    Every texture repeats every TILE pixels (or a multiple), on the pixel grid, at a random whole-CELL
    offset, or with `anchored` at none: its marks then sit at the same place on the image's grid in every
    picture (see `render`). What else changes from image to image is coarse: how big clouds are, how tall
    grass grows, each stone's tone, patches of light and shade.

    Every texture shows in any 32x32 patch (the classifier's view, about the smallest region worth painting).
    Clouds used to be soft puffs placed by coarse noise: a small region or a patch between puffs showed plain
    sky, and where the puffs were was one more thing a model had to choose from the noise (the model card).
    """
    x, y = _grid(height, width)
    if not anchored:
        x = x + CELL * int(rng.integers(0, 4))  # the offset, in whole cells
        y = y + CELL * int(rng.integers(0, 4))
    shade = 1.0 + 0.12 * (_value_noise(height, width, 48, rng) - 0.5)  # coarse light and shade
    if texture == "stripes":  # diagonal stripes
        p = _band((x + y) % TILE, 0.5, TILE / 2 + 0.5)
    elif texture == "dots":  # a dot in every tile
        du, dv = x % TILE - (TILE - 1) / 2, y % TILE - (TILE - 1) / 2
        p = np.clip(4.4 - np.sqrt(du * du + dv * dv), 0.0, 1.0)
    elif texture == "checks":  # squares of half a tile
        p = ((x // (TILE // 2) + y // (TILE // 2)) % 2).astype(np.float32)
    elif texture == "waves":  # wavy lines across, a wave every two tiles
        d = (y + 3.0 * np.sin(2 * np.pi * x / (2 * TILE))) % TILE
        p = _band(d, 2.0, 6.5)
    elif texture == "grass":  # blades: two strokes per tile, taller where the coarse noise is high
        column = x % TILE
        blades = np.maximum(_band(column, 2.0, 5.0), 0.7 * _band(column, 9.0, 11.5))
        tops = _value_noise(height, width, 24, rng)
        p = blades * np.clip(1.8 - ((y % TILE) / TILE) * (1.6 - tops), 0.0, 1.0)
        shade = shade * (0.92 + 0.16 * tops)
    elif texture == "clouds":  # little clouds, a round top and two lobes, in rows half a repeat high, every other row shifted
        row, shifted = _staggered(x, y, REPEAT // 2, REPEAT)
        u = shifted % REPEAT - (REPEAT - 1) / 2
        v = y % (REPEAT // 2) - (REPEAT // 2 - 1) / 2
        size = 0.85 + 0.3 * _value_noise(height, width, 48, rng)  # bigger and smaller clouds, coarsely
        edge = np.minimum.reduce([np.hypot(u, v) - 6.0 * size,  # signed distance to the nearest of the three discs
                                  np.hypot(u + 6.0 * size, v - 1.5) - 4.5 * size,
                                  np.hypot(u - 6.0 * size, v - 1.5) - 4.5 * size])
        p = np.clip(0.5 - edge / 2.0, 0.0, 1.0)
        p = p * p * (3 - 2 * p)
    elif texture == "brick":  # bricks a tile wide and half a tile high, every other row shifted, mortar lines
        row, shifted = _staggered(x, y, TILE // 2, TILE)
        u = shifted % TILE
        p = np.maximum(_band(u, -1.0, 1.0), _band(y % (TILE // 2), -1.0, 1.0))
    elif texture == "stone":  # rounded stones a tile across, every other row shifted, each its own shade
        row, shifted = _staggered(x, y, TILE, TILE)
        u = shifted % TILE
        du, dv = np.abs(u - (TILE - 1) / 2), np.abs(y % TILE - (TILE - 1) / 2)
        p = np.clip(np.maximum(du, dv) + 0.4 * np.minimum(du, dv) - 5.5, 0.0, 1.0)
        tone = rng.random((height // TILE + 6, width // TILE + 6)).astype(np.float32)
        column = (shifted // TILE).astype(int)
        shade = shade * (0.9 + 0.2 * tone[row.astype(int) % tone.shape[0], column % tone.shape[1]])
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return p.astype(np.float32), shade.astype(np.float32)


def _staggered(x: np.ndarray, y: np.ndarray, row_height: int, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, shifted x) of a pattern laid in rows `row_height` high, every other row shifted by half a `period`."""
    row = y // row_height
    return row, x + (row % 2) * (period // 2)


def _band(d: np.ndarray, start: float, end: float) -> np.ndarray:
    """1 where start <= d < end, with one pixel of soft edge on either side."""
    return np.clip(np.minimum(d - start + 0.5, end - d + 0.5), 0.0, 1.0)


def render(material: Material, height: int, width: int, rng: np.random.Generator, anchored: bool = False) -> np.ndarray:
    """A (height, width, 3) float32 image in [0, 1] of one material.

    `anchored` puts the texture's marks on a fixed grid (the denoiser's pictures): the autoencoder and the
    classifier learn every offset, so they read any picture; the diffusion model learns the one grid, so it has
    no offset to choose. A model that must choose one from the noise, region by region, leaves it undecided where
    the evidence is thin -- in a small region, near an edge, at the last of few steps -- and an estimate trained
    with a squared error is there the mean of the offsets: a flat, faded patch.
    """
    return render_marked(material, height, width, rng, anchored)[0]


def render_marked(material: Material, height: int, width: int, rng: np.random.Generator,
                  anchored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image, marks): `render`'s image and where its texture's marks are, in [0, 1] (zero for a plain colour)."""
    base = np.array(material.rgb, np.float32)
    image = np.broadcast_to(base, (height, width, 3)).copy()
    p = np.zeros((height, width), np.float32)
    if material.texture is not None:
        p, shade = pattern(material.texture, height, width, rng, anchored)
        mark = contrast(base)
        image = base + (mark - base) * (MIX[material.texture] * p)[..., None]
        image = image * shade[..., None]
    return _photograph(image, rng), p


def _photograph(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting and grain: a little overall brightness, a gentle gradient, a little noise."""
    height, width = image.shape[:2]
    x, y = _grid(height, width)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-6
    ramp = ((x - width / 2) * direction[0] + (y - height / 2) * direction[1]) / max(height, width)
    light = rng.uniform(0.94, 1.06) + rng.uniform(0.0, 0.06) * ramp
    image = image * light[..., None] + rng.normal(0.0, 0.012, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def random_material(rng: np.random.Generator) -> Material:
    materials = all_materials()
    return materials[rng.integers(len(materials))]


def random_shapes(height: int, width: int, count: int, rng: np.random.Generator,
                  radii: tuple[float, float] = (0.1, 0.35)) -> np.ndarray:
    """(count, H, W) bool masks of random ellipses and rectangles, each with half-axes of `radii` of the canvas
    side (by default 20-70% of the side across)."""
    x, y = _grid(height, width)
    masks = np.zeros((count, height, width), bool)
    for i in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(*radii) * height, rng.uniform(*radii) * width
        if rng.random() < 0.5:
            masks[i] = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0
        else:
            masks[i] = (np.abs(x - cx) < rx) & (np.abs(y - cy) < ry)
    return masks


def composite(rng: np.random.Generator, height: int, width: int, background: Material | None = None,
              shapes: tuple[int, int] = (1, 4)) -> np.ndarray:
    """Other materials in random shapes over a background material (random when None): a picture with
    regions, for the autoencoder (boundaries)."""
    return composite_over(rng, height, width, background, shapes)[0]


def composite_over(rng: np.random.Generator, height: int, width: int, background: Material | None = None,
                   shapes: tuple[int, int] = (1, 4), anchored: bool = False,
                   radii: tuple[float, float] = (0.1, 0.35), inside: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(picture, background alone): `composite`'s picture and the background material's image under it (the
    denoiser's two targets for a composite: see `train.targets`); `radii` as in `random_shapes`.

    With `inside`, the `background` material shows only in the first region, over another random material:
    what a layer's model sees when its prompt is painted in a region of a canvas (the second value is still
    that material alone)."""
    base = render(background or random_material(rng), height, width, rng, anchored)
    image = render(random_material(rng), height, width, rng, anchored) if inside else base.copy()
    for k, mask in enumerate(random_shapes(height, width, int(rng.integers(*shapes)), rng, radii)):
        image[mask] = base[mask] if inside and k == 0 else render(random_material(rng), height, width, rng, anchored)[mask]
    return image, base


def grow_into_neighbours(picture: np.ndarray, base: np.ndarray, pixels: int) -> np.ndarray:
    """`picture` with the material of `base` (where the two are equal) grown `pixels` into the regions around
    it, each pixel within that reach (a square) drawn from `base`: a composite's target at the stream's quietest
    slot (see `train.targets`)."""
    own = np.all(picture == base, axis=-1)
    if pixels <= 0 or own.all() or not own.any():
        return picture
    k = 2 * pixels + 1
    table = np.pad(own.astype(np.int32), ((pixels + 1, pixels), (pixels + 1, pixels))).cumsum(0).cumsum(1)
    near = (table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]) > 0
    return np.where(near[..., None], base, picture)


def random_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Free-form colour: smooth random colour fields with a few sharp shapes, in any colour (for the
    autoencoder, so background images that are not demo materials still keep their colours)."""
    image = np.stack([_value_noise(height, width, rng.uniform(16, 96), rng) for _ in range(3)], axis=-1)
    image = rng.uniform(0.0, 0.6) + image * rng.uniform(0.3, 1.0)
    for mask in random_shapes(height, width, int(rng.integers(0, 4)), rng):
        image[mask] = rng.random(3)
    return _photograph(np.clip(image, 0.0, 1.0).astype(np.float32), rng)


def autoencoder_sample(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One training image for the autoencoder: a material (60%), a composite (30%) or a free-form photo (10%)."""
    draw = rng.random()
    if draw < 0.6:
        return render(random_material(rng), height, width, rng)
    if draw < 0.9:
        return composite(rng, height, width)
    return random_photo(rng, height, width)


__all__ = ["COLOURS", "TEXTURES", "autoencoder_sample", "composite", "composite_over", "contrast", "grow_into_neighbours", "pattern", "random_photo", "render", "render_marked"]
