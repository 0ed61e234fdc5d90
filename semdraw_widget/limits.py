"""The ranges a person's settings must lie in, checked the same way by the canvas and the engine, and the
layer settings' defaults.

Neither torch nor the widget stack is imported here: the canvas checks without torch, the engine
without the widget. js/src/palette.js NUMBER_RANGES holds the same layer limits for the browser.
"""

from __future__ import annotations

import numbers
from typing import Any

MAX_MASK_BLUR = 256  # pixels; the blur pads a mask by 3 std on every side, so it must stay bounded
# The largest value of each layer setting (the engine's mask_std is the canvas's mask_blur).
LAYER_SETTING_LIMITS = {"prompt_strength": 1.0, "mask_strength": 1.0, "mask_blur": MAX_MASK_BLUR, "mask_std": MAX_MASK_BLUR}
# What a new layer gets for a setting not given (the pipelines' default_prompt_strength, ... default to these).
LAYER_SETTING_DEFAULTS = {"prompt_strength": 0.95, "mask_strength": 1.0, "mask_std": 8.0}
SEED_LIMIT = 2**63  # seeds are non-negative int64s, a range every torch generator takes
# Classifier-free guidance: generous bounds (real use: scale 1-10, delta 0-1.5) that keep frames finite.
GUIDANCE_LIMITS = {"guidance_scale": 100.0, "delta": 10.0}


def is_whole_number(value: Any) -> bool:
    """An integer of any kind (Python, numpy), but not a bool, which Python counts as one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(name: str, value: Any, high: float, what: str = "a number") -> float:
    """A real number (not a bool) between 0 and ``high``, as a float; NaN and infinities are errors too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= high:
        raise ValueError(f"{name} must be {what} between 0 and {high:g} (got {value!r})")
    return float(value)


def check_max_in_flight(value: Any) -> int:
    """How many frames may wait for the browser's acknowledgement: a whole number, at least 1."""
    if not is_whole_number(value) or value < 1:
        raise ValueError(f"max_in_flight must be a whole number of frames, at least 1 (got {value!r})")
    return int(value)


def check_seed(value: Any) -> int:
    if not is_whole_number(value) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1 (got {value!r})")
    return int(value)
