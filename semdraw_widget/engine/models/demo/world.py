"""The demo model's synthetic world: images of coloured textures, drawn procedurally.

`render(material, height, width, rng)` paints a whole image of one material (a colour and a texture,
see `vocabulary.py`). Each texture is a pattern p(x, y) in [0, 1] that mixes the base colour towards
a contrast colour (lighter for dark colours, darker for light ones), so the base colour stays what a
region reads as. What varies from image to image, as in a photograph, is the texture's scale,
orientation and phase, the lighting (a little brightness and a gentle gradient) and a little grain;
what never varies is the colour of a word. So a seed changes texture but not colours.

`composite(rng, ...)` lays several materials out in random shapes, and `random_photo` draws
free-form colour fields: the autoencoder learns from both, so it also encodes boundaries and
photographs given as background images.

Sizes are in pixels of the image; textures keep their size in pixels whatever the canvas size.
"""

from __future__ import annotations

import numpy as np

from .vocabulary import COLOURS, TEXTURES, Material, all_materials

# How far each texture's pattern moves the base colour towards its contrast colour.
MIX = {"stripes": 0.8, "dots": 0.85, "checks": 0.8, "waves": 0.6, "grass": 0.7, "clouds": 0.85, "brick": 0.9, "stone": 0.85}


def contrast(rgb: np.ndarray) -> np.ndarray:
    """The colour a texture's marks take over `rgb`: towards white for dark colours, darker for light ones."""
    luminance = float(rgb @ np.array([0.3, 0.59, 0.11]))
    return rgb + (1.0 - rgb) * 0.6 if luminance < 0.55 else rgb * 0.55


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x, y


def _sharp(wave: np.ndarray, sharpness: float = 4.0) -> np.ndarray:
    """A sine turned into a soft-edged square wave in [0, 1]."""
    return 0.5 + 0.5 * np.tanh(sharpness * wave)


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


def _value_noise_at(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [0, 1] at grid coordinates (u, v) (one random value per unit cell), for
    anisotropic or rotated noise."""
    u, v = u - u.min(), v - v.min()
    grid = rng.random((int(v.max()) + 2, int(u.max()) + 2), dtype=np.float32)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    top = grid[v0, u0] * (1 - fu) + grid[v0, u0 + 1] * fu
    bottom = grid[v0 + 1, u0] * (1 - fu) + grid[v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def _rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


def pattern(texture: str, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(p, shade): the texture's pattern in [0, 1] and a per-pixel brightness factor (bricks, stones and
    blades of grass differ a little from each other)."""
    x, y = _grid(height, width)
    x, y = x + rng.uniform(0, 512), y + rng.uniform(0, 512)  # phase
    scale = rng.uniform(0.8, 1.25)
    shade = np.ones((height, width), np.float32)
    if texture == "stripes":
        u, _ = _rotated(x, y, rng.choice([0.0, 0.5, 0.25, 0.75]) * np.pi)
        p = _sharp(np.sin(2 * np.pi * u / (24 * scale)) - 0.2)  # marks a little narrower than the base
    elif texture == "dots":
        period = 24 * scale
        u, v = _rotated(x, y, rng.uniform(-0.2, 0.2))
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        p = _sharp((0.3 * period - np.sqrt(du * du + dv * dv)) / 2.0, 1.0)
    elif texture == "checks":
        size = 16 * scale
        u, v = _rotated(x, y, rng.choice([0.0, 0.25]) * np.pi)
        p = _sharp(np.sin(np.pi * u / size) * np.sin(np.pi * v / size), 6.0)
    elif texture == "waves":
        period, amplitude, length = 20 * scale, rng.uniform(3, 6) * scale, rng.uniform(40, 64) * scale
        d = y + amplitude * np.sin(2 * np.pi * x / length)
        p = _sharp(np.sin(2 * np.pi * d / period) - 0.3, 3.0)
    elif texture == "grass":
        # blades: noise with thin, tall cells along a slightly tilted vertical, thresholded into streaks
        u, v = _rotated(x, y, rng.uniform(-0.15, 0.15))
        blades = _value_noise_at(u / (2.5 * scale), v / (18 * scale), rng)
        p = _sharp((blades - 0.5) * 5, 1.0)
        shade = 0.9 + 0.2 * _value_noise(height, width, 20, rng)
    elif texture == "clouds":
        field = sum(weight * _value_noise(height, width, cell * scale, rng) for weight, cell in ((0.55, 32), (0.3, 16), (0.15, 8)))
        p = np.clip((field - 0.48) / 0.14, 0.0, 1.0)
        p = p * p * (3 - 2 * p)
    elif texture == "brick":
        brick_w, brick_h, mortar = 30 * scale, 14 * scale, 2.2
        row = np.floor(y / brick_h)
        u = x + (row % 2) * brick_w / 2
        column = np.floor(u / brick_w)
        du, dv = u - column * brick_w, y - row * brick_h
        edge = np.minimum(np.minimum(du, brick_w - du), np.minimum(dv, brick_h - dv))
        p = _sharp((mortar - edge) / 1.0, 1.0)
        shade = 0.88 + 0.24 * _hash(row, column, rng)
    elif texture == "stone":
        p, shade = _cobbles(x, y, 26 * scale, rng)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return p.astype(np.float32), shade.astype(np.float32)


def _hash(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A repeatable random value in [0, 1) per integer pair (per brick)."""
    k1, k2 = rng.integers(1, 10_000, 2)
    return (np.sin(a * 12.9898 * k1 + b * 78.233 * k2) * 43758.5453) % 1.0


def _cobbles(x: np.ndarray, y: np.ndarray, cell: float, rng: np.random.Generator):
    """Voronoi cells on a jittered grid: p is 1 in the gaps between stones; each stone has its own shade."""
    gy, gx = np.floor(y / cell).astype(int), np.floor(x / cell).astype(int)
    jitter = rng.random((int(gy.max()) + 3, int(gx.max()) + 3, 2)) * 0.8 + 0.1
    tone = rng.random((int(gy.max()) + 3, int(gx.max()) + 3)).astype(np.float32)
    best = np.full(x.shape, np.inf, np.float32)
    second = np.full(x.shape, np.inf, np.float32)
    owner_tone = np.zeros(x.shape, np.float32)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            cy, cx = np.clip(gy + oy, 0, None), np.clip(gx + ox, 0, None)
            py = (cy + jitter[cy, cx, 0]) * cell
            px = (cx + jitter[cy, cx, 1]) * cell
            d = np.sqrt((x - px) ** 2 + (y - py) ** 2)
            closer = d < best
            second = np.where(closer, best, np.minimum(second, d))
            owner_tone = np.where(closer, tone[cy, cx], owner_tone)
            best = np.where(closer, d, best)
    p = _sharp((2.5 - (second - best)) / 1.2, 1.0)
    return p, 0.85 + 0.3 * owner_tone


def render(material: Material, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width, 3) float32 image in [0, 1] of one material."""
    base = np.array(material.rgb, np.float32)
    image = np.broadcast_to(base, (height, width, 3)).copy()
    if material.texture is not None:
        p, shade = pattern(material.texture, height, width, rng)
        mark = contrast(base)
        image = base + (mark - base) * (MIX[material.texture] * p)[..., None]
        image = image * shade[..., None]
    return _photograph(image, rng)


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


def random_shapes(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, H, W) bool masks of random ellipses and rectangles, each 20-70% of the canvas side."""
    x, y = _grid(height, width)
    masks = np.zeros((count, height, width), bool)
    for i in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.1, 0.35) * height, rng.uniform(0.1, 0.35) * width
        if rng.random() < 0.5:
            masks[i] = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0
        else:
            masks[i] = (np.abs(x - cx) < rx) & (np.abs(y - cy) < ry)
    return masks


def composite(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Two to four materials in random shapes over a background material (for the autoencoder)."""
    image = render(random_material(rng), height, width, rng)
    for mask in random_shapes(height, width, int(rng.integers(1, 4)), rng):
        image[mask] = render(random_material(rng), height, width, rng)[mask]
    return image


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


__all__ = ["COLOURS", "TEXTURES", "autoencoder_sample", "composite", "contrast", "pattern", "random_photo", "render"]
