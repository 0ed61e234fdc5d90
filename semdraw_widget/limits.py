"""Every limit in one place: the ranges of a person's settings and their defaults, and the budget of every input.

The settings' ranges are checked the same way by the canvas and the engine. The budgets bound what any
input may cost before a byte of it is allocated: a small message, upload or file must never make the
kernel allocate gigabytes. docs/reliability.md lists each limit with its reason. Neither torch nor the
widget stack is imported here: the canvas checks without torch, the engine without the widget.
js/src/palette.js holds the same layer limits for the browser (NUMBER_RANGES, MAX_LAYERS).
"""

from __future__ import annotations

import numbers
import reprlib
from typing import Any

MiB = 1024 * 1024

MAX_MASK_BLUR = 256  # pixels; the blur pads a mask by 3 std on every side, so it must stay bounded
# The largest value of each layer setting (the engine's mask_std is the canvas's mask_blur).
LAYER_SETTING_LIMITS = {"prompt_strength": 1.0, "mask_strength": 1.0, "mask_blur": MAX_MASK_BLUR, "mask_std": MAX_MASK_BLUR}
# What a new layer gets for a setting not given (the pipelines' default_prompt_strength, ... default to these).
LAYER_SETTING_DEFAULTS = {"prompt_strength": 0.95, "mask_strength": 1.0, "mask_std": 8.0}
SEED_LIMIT = 2**63  # seeds are non-negative int64s, a range every torch generator takes
# Classifier-free guidance: generous bounds (real use: scale 1-10, delta 0-1.5) that keep frames finite.
GUIDANCE_LIMITS = {"guidance_scale": 100.0, "delta": 10.0, "guidance_rescale": 1.0}

# ---- the budgets of inputs ----------------------------------------------------------------------------
MAX_SIDE = 4096  # canvas pixels per side: 8x the models' native 512, so one mask is at most 16 MiB
# Layers per canvas, from Python, the browser and scene files alike. Real scenes use a handful (the widget's
# shortcuts select 1-9); every layer costs a mask per canvas and a model item per slot in each frame.
MAX_LAYERS = 16
MAX_TEXT_CHARS = 2000  # a prompt, negative prompt or layer name: far beyond what a text encoder reads
MAX_ID_CHARS = 64  # a layer id or a view id: the views make 9- and 8-character ones
# A background image upload: the file, then its pixels, checked from its header before decoding.
MAX_IMAGE_BYTES = 20 * MiB
MAX_IMAGE_PIXELS = 64 * 10**6  # a 45-megapixel camera photo fits; decoded it is at most 256 MB (RGBA)
HELD_STROKE_BYTES = 16 * MiB  # strokes held for a layer that has not arrived yet, per canvas
# A scene file: its scene.json (the longest legitimate one, 16 layers of 2000-character prompts all
# written as 12-byte \u escapes, is about 1.2 MiB) and how deep its JSON nests (a saved scene nests 3 deep).
MAX_SCENE_JSON_BYTES = 2 * MiB
MAX_JSON_DEPTH = 8
# A scene's PNG member may hold its pixels uncompressed plus this much for PNG's own headers and chunks.
PNG_OVERHEAD_BYTES = 1 * MiB
MAX_QUOTED_CHARS = 60  # how much of a bad value an error message quotes
MAX_REPORT_CHARS = 1000  # a status line or error message about a browser message, whatever its source


def scene_image_budget(width: int, height: int, channels: int) -> int:
    """The most bytes a scene's PNG of `width` x `height` with `channels` 8-bit channels may inflate to. With
    the JSON's budget and the layer limit, it bounds a whole scene: 24 MiB at 512 x 512, 323 MiB at 4096 x 4096."""
    return width * height * channels + height + PNG_OVERHEAD_BYTES


class _Quoting(reprlib.Repr):
    """reprlib's bounded repr (few items, shallow nesting), with a long string or number cut to its start."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 2, 4, 4, 4, 4
        self.maxstring = self.maxother = self.maxlong = MAX_QUOTED_CHARS

    def repr_str(self, value: str, level: int) -> str:
        if len(value) <= MAX_QUOTED_CHARS:
            return repr(value)
        return f"{value[:MAX_QUOTED_CHARS]!r}... ({len(value)} characters)"

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() <= 4 * MAX_QUOTED_CHARS:
            return repr(value)
        return f"an integer of {value.bit_length()} bits"


_quoting = _Quoting()


def quote(value: Any) -> str:
    """A short, safe repr of a value for an error message: at most a prefix of a long string, a few items of
    a long or deeply nested container (a 10 MB field must not become a 10 MB message)."""
    try:
        text = _quoting.repr(value)
    except Exception:  # a repr that fails (recursion, a hostile __repr__) must not hide the real error
        return f"a {type(value).__name__}"
    return text if len(text) <= 4 * MAX_QUOTED_CHARS else text[: 4 * MAX_QUOTED_CHARS] + "..."


def describe_error(exc: BaseException) -> str:
    """A library's exception (a zip or image decoder's) for an error message: its type and the start of its
    text, which may quote the bad bytes at length."""
    text = str(exc)
    return f"{type(exc).__name__}: {text if len(text) <= 4 * MAX_QUOTED_CHARS else text[: 4 * MAX_QUOTED_CHARS] + '...'}"


def shorten(message: str) -> str:
    """A message cut to MAX_REPORT_CHARS, for the status line, error messages and the log."""
    if len(message) <= MAX_REPORT_CHARS:
        return message
    return f"{message[:MAX_REPORT_CHARS]}... ({len(message)} characters in all)"


def is_whole_number(value: Any) -> bool:
    """An integer of any kind (Python, numpy), but not a bool, which Python counts as one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(name: str, value: Any, high: float, what: str = "a number") -> float:
    """A real number (not a bool) between 0 and ``high``, as a float; NaN and infinities are errors too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= high:
        raise ValueError(f"{name} must be {what} between 0 and {high:g} (got {quote(value)})")
    return float(value)


def check_max_in_flight(value: Any) -> int:
    """How many frames may wait for the browser's acknowledgement: a whole number, at least 1."""
    if not is_whole_number(value) or value < 1:
        raise ValueError(f"max_in_flight must be a whole number of frames, at least 1 (got {quote(value)})")
    return int(value)


def check_seed(value: Any) -> int:
    if not is_whole_number(value) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1 (got {quote(value)})")
    return int(value)


def check_id(what: str, value: Any) -> str:
    """A layer or view id: a non-empty string of at most MAX_ID_CHARS printable characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise ValueError(f"{what} must be a string of 1 to {MAX_ID_CHARS} printable characters (got {quote(value)})")
    return value


def check_text(what: str, value: Any) -> str:
    """A prompt or name: a string of at most MAX_TEXT_CHARS; `what` names it in the error."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string (got {type(value).__name__})")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{what} is {len(value)} characters long; keep it under {MAX_TEXT_CHARS}")
    return value


def check_layer_count(count: int) -> None:
    if count > MAX_LAYERS:
        raise ValueError(
            f"a canvas holds at most {MAX_LAYERS} layers (got {count}); merge layers that share a prompt, "
            "or remove ones you no longer use"
        )
