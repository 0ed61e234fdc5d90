"""Strokes that reach the kernel before their layer: held for a moment, then applied in order or reported.

A view sends its layer list as a widget state update, which the front end may hold back while an earlier
update is unanswered; strokes travel as custom messages, which are never held back. So the first strokes
on a new (or restored) layer can arrive before the layer itself. The inbox applies a stroke at once when
its layer is known and no earlier stroke on that layer waits; otherwise it holds the stroke until the
layer arrives (`release`, called on every layer change) or `HOLD_UNKNOWN_LAYER_S` has passed (then the
stroke is reported and dropped). See docs/architecture.md, "A stroke".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .limits import HELD_STROKE_BYTES
from .protocol import MaskPatch, ProtocolError

log = logging.getLogger("semdraw_widget")

HOLD_UNKNOWN_LAYER_S = 2.0  # how long a stroke may wait for its layer to arrive


class StrokeInbox:
    """One canvas's strokes from its views, in arrival order per layer.

    `known_layers()` lists the layer ids the kernel has; `apply(patch, arrival)` applies a stroke;
    `report(message)` tells the person about a dropped one; `call_later(delay, fn)` arranges a later check
    (on the kernel's thread where there is one: `KernelThread.call_later`)."""

    def __init__(self, known_layers: Callable[[], list[str]], apply: Callable[[MaskPatch, float], None],
                 report: Callable[[str], None], call_later: Callable[[float, Callable[[], None]], None],
                 clock: Callable[[], float] = time.perf_counter):
        self._known_layers = known_layers
        self._apply = apply
        self._report = report
        self._call_later = call_later
        self._clock = clock
        self._held: list[tuple[MaskPatch, float]] = []  # (stroke, arrival), oldest first
        # Guards `_held` and `_expiry_armed`; a stroke is applied or held under it, so held ones keep their order.
        self._lock = threading.RLock()
        self._expiry_armed = False

    def receive(self, patch: MaskPatch) -> None:
        """A stroke from a view: applied now, or held. Raises ProtocolError (the stroke is dropped) when holding
        it would keep more than HELD_STROKE_BYTES."""
        with self._lock:
            if patch.layer in self._known_layers() and not any(held.layer == patch.layer for held, _ in self._held):
                self._apply(patch, self._clock())
            else:  # its layer is not known yet, or earlier strokes on it wait: keep their order
                self._hold(patch)

    def release(self) -> None:
        """Apply held strokes whose layer now exists, in order; report (and drop) those whose layer is
        still unknown after the hold; keep waiting for the rest."""
        with self._lock:
            held, self._held = self._held, []
            waiting, dropped = [], []
            for patch, arrival in held:
                if patch.layer in self._known_layers():
                    try:
                        self._apply(patch, arrival)
                    except Exception as exc:  # one bad stroke must not take the others with it
                        log.exception("could not apply a held stroke")
                        dropped.append(f"{type(exc).__name__}: {exc}")
                elif self._clock() - arrival >= HOLD_UNKNOWN_LAYER_S:
                    dropped.append(f"unknown layer {patch.layer!r}; known layers: {self._known_layers()}")
                else:
                    waiting.append((patch, arrival))
            self._held = waiting
            if waiting:
                self._expire_later()
        for message in dict.fromkeys(dropped):
            self._report(f"ignored a message from the browser: {message}")

    def _hold(self, patch: MaskPatch) -> None:
        held_bytes = sum(held.data.nbytes for held, _ in self._held)
        if held_bytes + patch.data.nbytes > HELD_STROKE_BYTES:
            raise ProtocolError(f"unknown layer {patch.layer!r}; known layers: {self._known_layers()}")
        self._held.append((patch, self._clock()))
        self._expire_later()

    def _expire_later(self) -> None:
        """Check the held strokes again after the hold: one pending check at a time, so a stroke may wait up
        to twice the hold. Called under `_lock`."""
        if self._expiry_armed:
            return
        self._expiry_armed = True
        self._call_later(HOLD_UNKNOWN_LAYER_S, self._expire)

    def _expire(self) -> None:
        with self._lock:
            self._expiry_armed = False
            self.release()
