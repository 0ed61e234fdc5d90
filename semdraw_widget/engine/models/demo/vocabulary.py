"""The demo model's closed vocabulary: which words it knows and what a prompt asks for.

A prompt is free text. The demo model reads two things from it: a colour and a texture, each from the
first word in the prompt that names one ("a red apple" is red, "blue water waves" is blue waves,
"a blue sky with white clouds" is blue clouds). Other words are ignored. With neither, it paints
something neutral (a plain warm grey); a texture without a colour takes the texture's own colour
(grass is green, water blue, brick red, ...).

This module is plain Python (no torch): the canvas uses it to suggest words and to say when a prompt
holds none of them; the world generator, the captions and the evaluation use it as the ground truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Colour words and their RGB in [0, 1]. Each is far enough from the others for a simple classifier.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.84, 0.13, 0.12),
    "green": (0.20, 0.62, 0.18),
    "blue": (0.13, 0.32, 0.85),
    "yellow": (0.96, 0.86, 0.14),
    "orange": (0.97, 0.52, 0.08),
    "purple": (0.52, 0.18, 0.68),
    "white": (0.96, 0.96, 0.95),
    "black": (0.07, 0.07, 0.08),
    "grey": (0.50, 0.50, 0.50),
    "brown": (0.48, 0.29, 0.12),
}
# Textures and the colour each takes when the prompt names none.
TEXTURES: dict[str, str] = {
    "stripes": "white",
    "dots": "white",
    "checks": "white",
    "waves": "blue",
    "grass": "green",
    "clouds": "blue",
    "brick": "red",
    "stone": "grey",
}
PLAIN = "plain"  # the texture of a prompt that names none
NEUTRAL_RGB = (0.78, 0.76, 0.72)  # what a prompt with no known word paints: plain warm grey
NEUTRAL = "neutral"

# Every spelling the model reads, and the vocabulary word it stands for.
COLOUR_WORDS: dict[str, str] = {
    **{name: name for name in COLOURS},
    "gray": "grey",
    "violet": "purple",
    "sky": "blue",
    "snow": "white",
}
TEXTURE_WORDS: dict[str, str] = {
    "stripes": "stripes", "stripe": "stripes", "striped": "stripes", "stripy": "stripes",
    "dots": "dots", "dot": "dots", "dotted": "dots", "spots": "dots", "spotted": "dots", "polka": "dots",
    "checks": "checks", "check": "checks", "checked": "checks", "checkered": "checks", "chequered": "checks",
    "checkerboard": "checks",
    "waves": "waves", "wave": "waves", "wavy": "waves", "water": "waves", "sea": "waves", "ocean": "waves",
    "lake": "waves", "river": "waves",
    "grass": "grass", "grassy": "grass", "lawn": "grass", "meadow": "grass",
    "clouds": "clouds", "cloud": "clouds", "cloudy": "clouds",
    "brick": "brick", "bricks": "brick",
    "stone": "stone", "stones": "stone", "rock": "stone", "rocks": "stone", "pebbles": "stone",
    "cobblestone": "stone", "cobblestones": "stone",
}
KNOWN_WORDS = {**COLOUR_WORDS, **TEXTURE_WORDS}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Material:
    """What a prompt asks the demo model for: a colour word (or None) and a texture word (or None)."""

    colour: str | None
    texture: str | None

    @property
    def is_neutral(self) -> bool:
        return self.colour is None and self.texture is None

    @property
    def rgb(self) -> tuple[float, float, float]:
        """The base colour painted: the prompt's colour, else the texture's own, else neutral."""
        if self.colour is not None:
            return COLOURS[self.colour]
        if self.texture is not None:
            return COLOURS[TEXTURES[self.texture]]
        return NEUTRAL_RGB

    @property
    def colour_class(self) -> str:
        """The colour a classifier should see: the named or implied colour, or "neutral"."""
        if self.colour is not None:
            return self.colour
        return TEXTURES[self.texture] if self.texture is not None else NEUTRAL

    @property
    def texture_class(self) -> str:
        return self.texture or PLAIN

    @property
    def label(self) -> str:
        """"red stripes", "red", "grass" (green implied), "neutral"."""
        if self.is_neutral:
            return NEUTRAL
        return " ".join(word for word in (self.colour, self.texture) if word)


def words(prompt: str) -> list[str]:
    return _WORD.findall(prompt.lower())


def parse(prompt: str) -> Material:
    """The material a prompt names: its first colour word and its first texture word."""
    colour = texture = None
    for word in words(prompt):
        if colour is None and word in COLOUR_WORDS:
            colour = COLOUR_WORDS[word]
        elif texture is None and word in TEXTURE_WORDS:
            texture = TEXTURE_WORDS[word]
    return Material(colour, texture)


def known_words(prompt: str) -> list[str]:
    """The words of `prompt` that the demo model reads (empty: it will paint something neutral)."""
    return [word for word in words(prompt) if word in KNOWN_WORDS]


def describe() -> str:
    """One line listing the vocabulary, for banners and warnings."""
    return f"colours: {', '.join(COLOURS)}; textures: {', '.join(TEXTURES)}; and synonyms such as water, sky, rock"


@dataclass(frozen=True)
class ClosedVocabulary:
    """What a model that knows only some words tells the canvas: the words (suggested in the prompt fields),
    a one-line description (the banner), and a note for a prompt with none of them (the status line)."""

    description: str
    suggestions: tuple[str, ...]

    def known_words(self, prompt: str) -> list[str]:
        return known_words(prompt)

    def note(self, prompt: str) -> str:
        """"" when the prompt names something the model knows (or is empty), else what to do."""
        if not prompt.strip() or known_words(prompt):
            return ""
        return f"The demo model knows none of the words of {prompt[:40]!r}, so it paints plain grey there. Its words: {self.description}."


VOCABULARY = ClosedVocabulary(
    describe(),
    tuple(dict.fromkeys([*COLOURS, *TEXTURES, *sorted(set(COLOUR_WORDS) - set(COLOURS)), *sorted(set(TEXTURE_WORDS) - set(TEXTURES))])),
)


def all_materials() -> list[Material]:
    """Every distinct thing the model can paint: each colour plain or with each texture, each texture in its
    own colour, and neutral."""
    materials = [Material(None, None)]
    materials += [Material(None, texture) for texture in TEXTURES]
    materials += [Material(colour, texture) for colour in COLOURS for texture in (None, *TEXTURES)]
    return materials
