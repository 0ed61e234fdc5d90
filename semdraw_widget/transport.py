"""How binary payloads travel between a canvas and its views, per direction: as buffers, or as base64.

Masks, frames and background images carry one binary payload each, sent as a binary buffer of the comm
message. Some front ends drop buffers (Colab's widget manager has been reported to ignore them), so each
view probes at render: it sends a known payload as a buffer (`probe`); the kernel answers whether it
arrived intact and sends the same payload back as a buffer (`probe_reply`); the view says whether that one
arrived (`transport`). A direction whose buffer did not survive falls back to base64 in the JSON content
(`buffer_b64`), the message otherwise the same. Kernel messages go to every view at once, so they are
base64 while any view needs it. See docs/architecture.md, "The wire protocol".
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading

from .protocol import ProtocolError

log = logging.getLogger("semdraw_widget")

#: What the probe carries both ways: every byte value once, so a text re-encoding shows too.
PROBE_BYTES = bytes(range(256))
BINARY, BASE64, UNKNOWN = "binary", "base64", "unknown"
#: The content field that holds a message's binary payload where buffers do not travel.
BASE64_FIELD = "buffer_b64"


def _bytes(buffer) -> bytes:
    return buffer.tobytes() if isinstance(buffer, memoryview) else bytes(buffer)


class Transport:
    """One canvas's choice per direction, from its views' probes; encodes and decodes payloads by it."""

    def __init__(self) -> None:
        # Per direction: None until a view has probed, then whether any view needed base64. Sticky: a view
        # that goes away says nothing, and base64 works everywhere.
        self._base64_to_kernel: bool | None = None
        self._base64_to_browser: bool | None = None
        self._lock = threading.Lock()  # the kernel's thread writes, any thread may read

    # ---- the probe ----------------------------------------------------------------------------
    def answer_probe(self, content: dict, buffers: list) -> tuple[dict, list]:
        """A view's `probe`: note whether its buffer arrived intact and reply, with the probe bytes as a buffer."""
        view = _view_of(content, "probe")
        intact = len(buffers or []) == 1 and _bytes(buffers[0]) == PROBE_BYTES
        choice = BINARY if intact else BASE64
        with self._lock:
            self._base64_to_kernel = bool(self._base64_to_kernel) or not intact
        if not intact:
            log.info("view %s: binary buffers do not reach the kernel; it sends base64", view)
        return {"type": "probe_reply", "view": view, "to_kernel": choice}, [PROBE_BYTES]

    def choose(self, content: dict) -> None:
        """A view's `transport`: whether the probe reply's buffer reached it."""
        view = _view_of(content, "transport")
        choice = content.get("to_browser")
        if choice not in (BINARY, BASE64):
            raise ProtocolError(f"transport: to_browser must be {BINARY!r} or {BASE64!r} (got {choice!r})")
        with self._lock:
            self._base64_to_browser = bool(self._base64_to_browser) or choice == BASE64
        if choice == BASE64:
            log.info("view %s: binary buffers do not reach it; the kernel sends base64", view)

    @property
    def state(self) -> dict[str, str]:
        """Per direction: "binary", "base64" (some view needs it) or "unknown" (no view has probed yet)."""
        with self._lock:
            return {"to_kernel": _name(self._base64_to_kernel), "to_browser": _name(self._base64_to_browser)}

    # ---- payloads -----------------------------------------------------------------------------
    def pack(self, content: dict, buffers: list | None) -> tuple[dict, list]:
        """A kernel message as it leaves: its buffer moved into `buffer_b64` while some view needs base64."""
        if not buffers:
            return content, []
        with self._lock:
            base64_needed = self._base64_to_browser
        if not base64_needed:
            return content, list(buffers)
        if len(buffers) != 1:
            raise ValueError(f"a message carries at most one binary payload (got {len(buffers)})")
        return {**content, BASE64_FIELD: base64.b64encode(_bytes(buffers[0])).decode("ascii")}, []

    @staticmethod
    def unpack(content: dict, buffers: list | None) -> list:
        """A view's message's buffers, with a `buffer_b64` payload decoded into one."""
        encoded = content.get(BASE64_FIELD)
        if buffers or encoded is None:
            return list(buffers or [])
        if not isinstance(encoded, str):
            raise ProtocolError(f"{BASE64_FIELD} must be a base64 string (got {type(encoded).__name__})")
        try:
            return [base64.b64decode(encoded, validate=True)]
        except (binascii.Error, ValueError):
            raise ProtocolError(f"{BASE64_FIELD} is not valid base64: the message arrived damaged") from None


def _view_of(content: dict, kind: str) -> str:
    view = content.get("view")
    if not isinstance(view, str) or not view:
        raise ProtocolError(f"{kind}: view must be a non-empty string id (got {view!r})")
    return view


def _name(base64_needed: bool | None) -> str:
    return UNKNOWN if base64_needed is None else BASE64 if base64_needed else BINARY
