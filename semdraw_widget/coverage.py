"""The one set of rules for reading a mask (and a background image array) a person hands over, shared by
the canvas and the engine.

A mask is a numpy array, a torch tensor or a PIL image shaped (H, W) or (1, H, W):

- bool: a hard mask (True = covered);
- uint8: coverage 0..255, the bytes the browser paints;
- any other integer or float type: the covered fraction in [0, 1] (NaN, infinities and values outside
  [0, 1] are errors, never clamped: they are a mistake upstream, and NaN would turn frames black);
- PIL images: the alpha channel when it says something (a painted layer exported with transparency);
  a fully opaque image is read as 8-bit grey, like one without alpha (a black-and-white mask saved as
  RGBA); "F" and "I" modes hold numbers and follow the array rules.

numpy only: the canvas uses these rules without torch, and torch tensors are recognised by their methods.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def _as_array(mask: Any) -> np.ndarray:
    if hasattr(mask, "getbands"):  # a PIL image, without importing PIL here
        if "A" in mask.getbands():
            alpha = np.asarray(mask.getchannel("A"))
            if alpha.min() < 255:
                return alpha
        if mask.mode.startswith(("F", "I")):  # 32-bit float / integer (and 16-bit) pixels are numbers
            return np.asarray(mask)
        return np.asarray(mask.convert("L"))
    if hasattr(mask, "detach") and hasattr(mask, "numpy"):  # a torch tensor, without importing torch here
        tensor = mask.detach().cpu()
        if tensor.is_floating_point():  # numpy has no bfloat16; a float is a fraction either way
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(mask)


def _checked(mask: Any, height: int, width: int) -> np.ndarray:
    """The mask as an (H, W) array of its own dtype, checked against the rules above."""
    array = _as_array(mask)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"a mask must hold booleans or real numbers (got {type(mask).__name__} of dtype {array.dtype}); "
            "pass a bool, uint8 or float array, a torch tensor or a PIL image"
        )
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (height, width):
        raise ValueError(
            f"a mask must have shape (height, width) = ({height}, {width}), or (1, {height}, {width}); "
            f"got {tuple(array.shape)}. Resize it to the canvas size first."
        )
    if array.dtype == np.bool_ or array.dtype == np.uint8:
        return array
    if not np.isfinite(array).all():
        raise ValueError(
            "a mask holds NaN or infinite values; replace them (e.g. np.nan_to_num(mask)) with coverage in [0, 1]"
        )
    low, high = array.min(), array.max()
    if low < 0 or high > 1:
        raise ValueError(
            f"a {array.dtype} mask must hold the covered fraction in [0, 1] (got values from {low} to {high}); "
            "pass uint8 for 0..255 coverage, bool for a hard mask, or scale it (e.g. mask / mask.max())"
        )
    return array


def warn_if_zero_one_uint8(mask: Any, stacklevel: int = 3) -> None:
    """Warn when a mask handed over by a person is 8-bit and holds only 0 and 1: almost surely a 0/1 mask cast
    with astype(np.uint8), which reads as 1/255 coverage. Called where a person's own mask comes in (not where
    the canvas hands its painted coverage on, where an eraser's edge may leave 1s); `stacklevel` 3 names the
    line that called the function calling this one."""
    dtype = str(getattr(mask, "dtype", ""))
    if dtype not in ("uint8", "torch.uint8") and getattr(mask, "mode", None) not in ("L", "LA", "RGBA"):
        return
    array = _as_array(mask)
    if array.dtype == np.uint8 and array.size and array.max() == 1:
        warnings.warn(
            "this uint8 mask holds only 0 and 1: uint8 masks are 0..255 coverage, so it covers 1/255 at most "
            "(next to nothing). Pass it as bool (mask.astype(bool)) or as 0/255 (mask * 255).",
            UserWarning, stacklevel=stacklevel,
        )


def to_fraction(mask: Any, height: int, width: int) -> np.ndarray:
    """float32 (H, W) in [0, 1]: the covered fraction of each pixel (a new array, never the caller's)."""
    array = _checked(mask, height, width)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


def to_coverage(mask: Any, height: int, width: int) -> np.ndarray:
    """uint8 (H, W) coverage 0..255 (a new array, never the caller's)."""
    array = _checked(mask, height, width)
    if array.dtype == np.uint8:
        return array.copy()
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    return np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)


def image_from_array(array: np.ndarray):
    """A PIL image from an (H, W, 3) / (H, W, 4) / (H, W) array: uint8 or other integers 0..255, floats in [0, 1]."""
    from PIL import Image

    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        hint = " (channels first? pass array.transpose(1, 2, 0))" if array.ndim == 3 and array.shape[0] in (3, 4) else ""
        raise ValueError(
            f"a background image array must be shaped (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey; "
            f"got {tuple(array.shape)}{hint}"
        )
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"a background image array must hold numbers (got dtype {array.dtype})")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(
                "a float background image must hold values in [0, 1] (no NaN); pass uint8 for 0..255 values"
            )
        array = np.rint(array * 255.0)
    elif array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"an integer background image must hold values 0..255 (got {array.min()} to {array.max()})"
        )
    return Image.fromarray(array.astype(np.uint8))
