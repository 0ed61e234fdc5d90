"""A small colour / texture classifier: the oracle that says what the demo model painted where.

It reads 32x32 patches. Each patch becomes 29 numbers that a person could read off it: its mean colour
and the colours of its lighter and darker halves (colour), and how its brightness varies (texture):
contrast, horizontal and vertical edge strength, and the share of its spatial frequencies in four
bands by four orientations. Two small heads on those features say the colour (10 colours or neutral)
and the texture (8 textures or plain).

It is fitted on the world generator's images after a round trip through the demo model's own
autoencoder, since the model's images are decoded by it (`fit`), and never on the model's own pictures. So
that it judges what a picture shows rather than how crisply, half of its pictures are drawn in two pieces at
different texture offsets, and half are made fainter and softer, keeping their labels. The fitted weights
ship next to the model (`classifier.safetensors`). `label_map` classifies every 8x8 cell of an image by the
patch centred on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .vocabulary import COLOURS, NEUTRAL, PLAIN, TEXTURES, Material

PATCH = 32
STRIDE = 8
COLOUR_CLASSES = (*COLOURS, NEUTRAL)
TEXTURE_CLASSES = (PLAIN, *TEXTURES)
_LUMA = torch.tensor([0.3, 0.59, 0.11])


def _band_masks() -> torch.Tensor:
    """(16, PATCH, PATCH//2+1) masks of the rfft2 grid: 4 frequency bands x 4 orientations."""
    fy = torch.fft.fftfreq(PATCH)[:, None] * PATCH
    fx = torch.fft.rfftfreq(PATCH)[None, :] * PATCH
    radius = torch.sqrt(fx**2 + fy**2)
    angle = torch.remainder(torch.atan2(fy, fx), torch.pi)  # 0: varies along x (vertical lines)
    masks = []
    for low, high in ((1, 2.5), (2.5, 4.5), (4.5, 8), (8, 16.5)):
        for k in range(4):
            centre = k * torch.pi / 4
            distance = torch.remainder(angle - centre + torch.pi / 2, torch.pi) - torch.pi / 2
            masks.append(((radius >= low) & (radius < high) & (distance.abs() <= torch.pi / 8)).float())
    return torch.stack(masks)


_BANDS = _band_masks()


def patch_features(patches: torch.Tensor) -> torch.Tensor:
    """(N, 3, PATCH, PATCH) in [0, 1] -> (N, 29) features."""
    n = patches.shape[0]
    flat = patches.reshape(n, 3, -1)
    luma = torch.einsum("c,ncp->np", _LUMA, flat)
    order = luma.argsort(dim=1)
    half = order.shape[1] // 2
    dark = torch.gather(flat, 2, order[:, None, :half].expand(-1, 3, -1)).mean(2)
    light = torch.gather(flat, 2, order[:, None, half:].expand(-1, 3, -1)).mean(2)
    mean = flat.mean(2)
    grey = luma.reshape(n, PATCH, PATCH)
    dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean((1, 2))
    dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs().mean((1, 2))
    centred = grey - grey.mean((1, 2), keepdim=True)
    power = torch.fft.rfft2(centred).abs() ** 2
    bands = torch.einsum("nyx,byx->nb", power, _BANDS)
    total = bands.sum(1, keepdim=True) + 1e-6
    contrast = luma.std(1)
    return torch.cat([
        mean, light, dark, contrast[:, None] * 4, dx[:, None] * 8, dy[:, None] * 8,
        bands / total, torch.log10(total) / 4,
    ], dim=1)


class Heads(torch.nn.Module):
    def __init__(self, features: int = 29, hidden: int = 96):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.colour = torch.nn.Linear(hidden, len(COLOUR_CLASSES))
        self.texture = torch.nn.Linear(hidden, len(TEXTURE_CLASSES))
        self.register_buffer("shift", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body((features - self.shift) / self.scale)
        return self.colour(hidden), self.texture(hidden)


@dataclass
class Classifier:
    heads: Heads

    @classmethod
    def load(cls, file: str | Path) -> "Classifier":
        from safetensors.torch import load_file

        heads = Heads()
        heads.load_state_dict(load_file(str(file)))
        return cls(heads.eval())

    def save(self, file: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(file))

    @torch.no_grad()
    def classify_patches(self, patches: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, PATCH, PATCH) in [0, 1] -> (colour index, texture index) arrays."""
        colour, texture = self.heads(patch_features(patches))
        return colour.argmax(1).numpy(), texture.argmax(1).numpy()

    def label_map(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour and texture index of each STRIDE x STRIDE cell of an (H, W, 3) image in [0, 1] (uint8 is
        read as 0..255), from the PATCH x PATCH patch centred on it (edge cells see a mirrored border)."""
        rgb = torch.from_numpy(np.asarray(image, np.float32) / (255.0 if np.asarray(image).dtype == np.uint8 else 1.0))
        rgb = rgb.permute(2, 0, 1)[None]
        pad = (PATCH - STRIDE) // 2
        padded = torch.nn.functional.pad(rgb, (pad, pad, pad, pad), mode="reflect")
        patches = padded.unfold(2, PATCH, STRIDE).unfold(3, PATCH, STRIDE)  # (1, 3, gh, gw, P, P)
        gh, gw = patches.shape[2:4]
        patches = patches[0].permute(1, 2, 0, 3, 4).reshape(-1, 3, PATCH, PATCH)
        colour, texture = self.classify_patches(patches)
        return colour.reshape(gh, gw), texture.reshape(gh, gw)

    def classify(self, image: np.ndarray) -> Material:
        """The material of a whole image: the most common colour and texture of its cells."""
        colour, texture = self.label_map(image)
        return material_of(int(np.bincount(colour.ravel()).argmax()), int(np.bincount(texture.ravel()).argmax()))


def material_of(colour_index: int, texture_index: int) -> Material:
    colour, texture = COLOUR_CLASSES[colour_index], TEXTURE_CLASSES[texture_index]
    if colour == NEUTRAL:
        return Material(None, None)
    return Material(colour, None if texture == PLAIN else texture)


def class_indices(material: Material) -> tuple[int, int]:
    return COLOUR_CLASSES.index(material.colour_class), TEXTURE_CLASSES.index(material.texture_class)


def _drawn(material: Material, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A world image of `material`. Half of them come in two pieces drawn at different offsets, joined along a
    random line: the same texture, with the seam a picture has where two parts chose their pattern apart."""
    from . import world

    image = world.render(material, size, size, rng)
    if rng.random() < 0.5:
        y, x = np.mgrid[0:size, 0:size]
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * size
        side = (x - size / 2) * np.cos(angle) + (y - size / 2) * np.sin(angle) > offset
        image[side] = world.render(material, size, size, rng)[side]
    return image


def _weakened(pixels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Half of a batch drawn fainter and softer, keeping their labels: each texture's marks brought 0-65% of the way
    to the local mean colour, then blurred a little or until the grain is gone. A texture drawn faintly is still
    that texture and a plain colour stays plain, so the classifier judges what a picture shows rather than how
    crisply (a generated picture is softer than the world's)."""
    weak = torch.from_numpy(rng.random(pixels.shape[0]) < 0.5)
    local = torch.nn.functional.avg_pool2d(pixels, 9, stride=1, padding=4, count_include_pad=False)
    keep = torch.from_numpy(rng.uniform(0.35, 1.0, pixels.shape[0]).astype(np.float32)).view(-1, 1, 1, 1)
    faint = local + keep * (pixels - local)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    soft = faint
    for _ in range(int(rng.integers(1, 4))):  # one to three passes: from a little softer to grain gone
        soft = torch.nn.functional.conv2d(torch.nn.functional.pad(soft, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return torch.where(weak.view(-1, 1, 1, 1), soft, pixels)


def fit(round_trip, seed: int = 0, images: int = 1200, epochs: int = 60, log=print) -> Classifier:
    """Fit the heads on random patches of world images passed through `round_trip` ((B, H, W, 3) -> same,
    e.g. the autoencoder's encode + decode; identity when None)."""
    from . import world
    from .vocabulary import all_materials

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    materials = all_materials()
    features, colours, textures = [], [], []
    for start in range(0, images, 16):
        labels = [materials[rng.integers(len(materials))] for _ in range(16)]
        batch = np.stack([_drawn(m, rng) for m in labels])
        if round_trip is not None:
            batch = round_trip(batch)
        pixels = _weakened(torch.from_numpy(batch).permute(0, 3, 1, 2), rng)
        for _ in range(8):
            y, x = rng.integers(0, 128 - PATCH + 1, 2)
            features.append(patch_features(pixels[:, :, y:y + PATCH, x:x + PATCH]))
            for m in labels:
                c, t = class_indices(m)
                colours.append(c)
                textures.append(t)
    x = torch.cat(features)
    yc, yt = torch.tensor(colours), torch.tensor(textures)
    heads = Heads()
    heads.shift.copy_(x.mean(0))
    heads.scale.copy_(x.std(0) + 1e-4)
    optimizer = torch.optim.Adam(heads.parameters(), lr=3e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 256):
            batch = order[i:i + 256]
            colour, texture = heads(x[batch])
            loss = torch.nn.functional.cross_entropy(colour, yc[batch]) + torch.nn.functional.cross_entropy(texture, yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        colour, texture = heads(x)
        accuracy = ((colour.argmax(1) == yc) & (texture.argmax(1) == yt)).float().mean().item()
    log(f"classifier: {len(x)} patches, training accuracy {accuracy:.3f}")
    return Classifier(heads.eval())
