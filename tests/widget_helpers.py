"""Helpers shared by the widget and streaming tests."""

import numpy as np


def stroke_message(layer, x, y, w, h, value=255, rev=1, enc="raw"):
    """A browser -> kernel mask message covering one rectangle with one value."""
    import zlib

    raw = np.full((h, w), value, np.uint8).tobytes()
    payload = zlib.compress(raw) if enc == "deflate" else raw
    return {"type": "mask", "layer": layer, "x": x, "y": y, "w": w, "h": h, "enc": enc, "rev": rev}, [memoryview(payload)]


def from_browser(canvas, content, buffers=()):
    """Deliver a custom message the way the comm does (to the canvas's `_on_msg`)."""
    canvas._handle_custom_msg(content, list(buffers))
