"""Messages between the browser canvas and the kernel, and the codecs for their binary payloads.

The protocol is stated once, in docs/architecture.md ("The wire protocol"): every message type in both
directions, its fields and buffers, the limits and what is rejected. This module is the kernel's side of
it (js/src/protocol.js is the view's): `decode_*` for what a view sends, `*_message` for what the kernel
sends. Every decoder raises `ProtocolError` with a message a person can act on; callers turn that into a
visible error and leave their state untouched.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np

from .limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MiB, check_id, describe_error, quote

#: Jupyter servers cap one websocket message at 10 MB by default; stay well under it per message, also
#: as base64 (4/3 larger), the transport where a front end drops binary buffers (transport.py).
MAX_MESSAGE_BYTES = 6 * 1024 * 1024
ACTIONS = ("start", "stop", "step", "render")
IMAGE_FORMATS = ("png", "jpeg", "webp")


class ProtocolError(ValueError):
    """A message from the browser that cannot be applied; the state is left unchanged."""


@dataclass(frozen=True)
class MaskPatch:
    """New coverage (uint8, 0..255) for one rectangle of one layer's mask."""

    layer: str
    x: int
    y: int
    data: np.ndarray  # (h, w) uint8
    rev: int = 0
    view: str | None = None  # the browser view that painted it

    @property
    def w(self) -> int:
        return int(self.data.shape[1])

    @property
    def h(self) -> int:
        return int(self.data.shape[0])


def _require_int(content: dict, key: str, minimum: int = 0) -> int:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"mask message field {key!r} must be an integer (got {quote(value)})")
    if value < minimum:
        raise ProtocolError(f"mask message field {key!r} must be >= {minimum} (got {value})")
    return value


def _checked_id(what: str, value) -> str:
    try:
        return check_id(what, value)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _buffer_bytes(buffers) -> bytes:
    if not buffers or len(buffers) != 1:
        count = 0 if not buffers else len(buffers)
        raise ProtocolError(f"message needs exactly one binary buffer (got {count})")
    buf = buffers[0]
    return buf.tobytes() if isinstance(buf, memoryview) else bytes(buf)


def decode_mask_message(content: dict, buffers, width: int, height: int) -> MaskPatch:
    """Validate a ``mask`` message against a canvas of ``width`` x ``height`` and decode its rectangle."""
    layer = _checked_id("a mask message's layer id", content.get("layer"))
    view = content.get("view")
    if view is not None:
        _checked_id("a mask message's view id", view)
    x, y = _require_int(content, "x"), _require_int(content, "y")
    w, h = _require_int(content, "w", 1), _require_int(content, "h", 1)
    if x + w > width or y + h > height:
        raise ProtocolError(
            f"mask rectangle x={x} y={y} w={w} h={h} lies outside the {width}x{height} canvas"
        )
    rev = content.get("rev", 0)
    if isinstance(rev, bool) or not isinstance(rev, int):
        raise ProtocolError(f"mask message field 'rev' must be an integer (got {quote(rev)})")
    payload = _buffer_bytes(buffers)
    expected = w * h
    enc = content.get("enc", "raw")
    if enc == "raw":
        raw = payload
    elif enc == "deflate":
        # Bounded decompression: a hostile or corrupt payload cannot expand past the rectangle's size.
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(payload, expected + 1)
        except zlib.error as exc:
            raise ProtocolError(f"mask payload is not valid deflate data ({exc})") from None
    else:
        raise ProtocolError(f"unknown mask encoding {quote(enc)}; use 'raw' or 'deflate'")
    if len(raw) != expected:
        raise ProtocolError(f"mask payload holds {len(raw)} bytes but a {w}x{h} rectangle needs {expected}")
    if enc == "deflate" and (not inflater.eof or inflater.unused_data):
        # The right number of bytes, but from a stream cut before its checksum or followed by other bytes: damaged.
        raise ProtocolError("mask payload is not one complete deflate stream (it is cut short, or followed by other bytes)")
    data = np.frombuffer(raw, dtype=np.uint8).reshape(h, w).copy()
    return MaskPatch(layer=layer, x=x, y=y, data=data, rev=rev, view=view)


def encode_mask_message(
    layer: str, x: int, y: int, data: np.ndarray, origin: str, view: str | None = None
) -> tuple[dict, list]:
    """Build a kernel -> browser ``mask`` message for ``data`` (uint8, (h, w)) placed at (x, y)."""
    h, w = data.shape
    raw = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    packed = zlib.compress(raw, 1)
    enc, payload = ("deflate", packed) if len(packed) < len(raw) else ("raw", raw)
    content = {"type": "mask", "layer": layer, "x": x, "y": y, "w": w, "h": h, "enc": enc, "origin": origin}
    if view is not None:
        content["view"] = view
    return content, [payload]


def mask_messages(layer: str, mask: np.ndarray, origin: str, view: str | None = None) -> list[tuple[dict, list]]:
    """Whole-mask messages for one layer, split into row bands so no message nears the server's cap."""
    height, width = mask.shape
    rows_per_band = max(1, MAX_MESSAGE_BYTES // max(width, 1))
    return [
        encode_mask_message(layer, 0, top, mask[top : top + rows_per_band], origin, view)
        for top in range(0, height, rows_per_band)
    ]


def decode_ack(content: dict) -> int:
    seq = content.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ProtocolError(f"ack message needs a non-negative integer 'seq' (got {quote(seq)})")
    return seq


def decode_action(content: dict) -> str:
    name = content.get("name")
    if name not in ACTIONS:
        raise ProtocolError(f"unknown action {quote(name)}; expected one of {', '.join(ACTIONS)}")
    return name


def decode_background_image(content: dict, buffers, width: int, height: int) -> np.ndarray | None:
    """Decode an uploaded background image into RGB uint8 of the canvas size, or None to clear it."""
    clear = content.get("clear", False)
    if not isinstance(clear, bool):
        raise ProtocolError(f"background image field 'clear' must be true or false (got {quote(clear)})")
    if clear:
        return None
    fmt = content.get("format")
    if fmt not in IMAGE_FORMATS:
        raise ProtocolError(f"background image format must be one of {', '.join(IMAGE_FORMATS)} (got {quote(fmt)})")
    payload = _buffer_bytes(buffers)
    if len(payload) > MAX_IMAGE_BYTES:
        raise ProtocolError(
            f"background image is {len(payload) / MiB:.1f} MB; the limit is {MAX_IMAGE_BYTES / MiB:.0f} MB"
        )
    from PIL import Image

    try:
        # Only the declared format's decoder reads it: the other decoders Pillow has stay out of reach.
        with Image.open(io.BytesIO(payload), formats=[fmt.upper()]) as image:
            return fit_image(image, width, height)
    except (ProtocolError, MemoryError):  # not a damaged file: a limit said no, or a budget was missed
        raise
    except Exception as exc:  # Pillow's decoders report a damaged file in many ways (OSError, SyntaxError, ...)
        raise ProtocolError(f"could not read the background image as {fmt} ({describe_error(exc)})") from None


def fit_image(image, width: int, height: int) -> np.ndarray:
    """Scale and centre-crop a PIL image to cover width x height; return RGB uint8 (H, W, 3).

    The pixel count is checked before a lazily opened file is decoded (a small file can hold a huge image),
    and only the part that shows is scaled, so no image, however thin, is scaled to more than the canvas."""
    from PIL import Image

    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ProtocolError(
            f"background image is {image.width}x{image.height} pixels; the limit is {MAX_IMAGE_PIXELS // 10**6} "
            f"megapixels. Downscale it to about {width}x{height} first."
        )
    if not image.width or not image.height:
        raise ProtocolError(f"background image is {image.width}x{image.height} pixels: it has none to show")
    scale = max(width / image.width, height / image.height)
    shown_width, shown_height = width / scale, height / scale  # the centred part of the image that covers the canvas
    left, top = (image.width - shown_width) / 2, (image.height - shown_height) / 2
    resized = image.convert("RGB").resize(
        (width, height), Image.LANCZOS, box=(left, top, left + shown_width, top + shown_height)
    )
    return np.asarray(resized, dtype=np.uint8)


def encode_image(rgb: np.ndarray, fmt: str, quality: int = 85) -> bytes:
    """Encode RGB uint8 (H, W, 3) as JPEG (while the scene changes) or PNG (lossless, once still)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, format="JPEG", quality=quality)
    elif fmt == "png":
        image.save(out, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown frame format {fmt!r}; use 'jpeg' or 'png'")
    return out.getvalue()


def frame_message(seq: int, fmt: str, width: int, height: int, stats: dict, payload: bytes) -> tuple[dict, list]:
    content = {"type": "frame", "seq": seq, "format": fmt, "width": width, "height": height, "stats": stats}
    return content, [payload]


def background_message(rgb: np.ndarray | None, view: str | None = None) -> tuple[dict, list]:
    content = {"type": "background_image", "clear": True} if rgb is None else {"type": "background_image", "format": "png"}
    if view is not None:
        content["view"] = view
    return content, [] if rgb is None else [encode_image(rgb, "png")]


def decode_sync(content: dict) -> str | None:
    """The id of the view asking for a sync, to address the replies to it (None: every view)."""
    view = content.get("view")
    return None if view is None else _checked_id("sync: view", view)


def error_message(message: str) -> tuple[dict, list]:
    return {"type": "error", "message": message}, []
