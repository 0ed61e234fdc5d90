"""StrokeInbox on its own, with a hand-moved clock and the later checks run by the test."""

import numpy as np
import pytest

from semdraw_widget import stroke_inbox
from semdraw_widget.protocol import MaskPatch, ProtocolError
from semdraw_widget.stroke_inbox import HOLD_UNKNOWN_LAYER_S, StrokeInbox


class Desk:
    """What the canvas gives an inbox: its layers, where strokes go, reports, a clock and later checks."""

    def __init__(self, layers=()):
        self.layers = list(layers)
        self.applied = []  # (layer, first byte, arrival)
        self.reports = []
        self.now = 50.0
        self.checks = []  # (delay, fn) the inbox asked to be called later
        self.inbox = StrokeInbox(lambda: list(self.layers), self.apply, self.reports.append,
                                 lambda delay, fn: self.checks.append((delay, fn)), clock=lambda: self.now)

    def apply(self, patch, arrival):
        if patch.data[0, 0] == 13:
            raise ValueError("an unlucky stroke")
        self.applied.append((patch.layer, int(patch.data[0, 0]), arrival))

    def run_checks(self):
        checks, self.checks = self.checks, []
        for delay, fn in checks:
            assert delay == stroke_inbox.HOLD_UNKNOWN_LAYER_S
            fn()


def stroke(layer, value=255, size=4):
    return MaskPatch(layer=layer, x=0, y=0, data=np.full((size, size), value, np.uint8))


def test_a_stroke_on_a_known_layer_is_applied_at_once():
    desk = Desk(["L"])
    desk.inbox.receive(stroke("L"))
    assert desk.applied == [("L", 255, 50.0)] and not desk.checks


def test_strokes_wait_for_their_layer_and_are_applied_in_order_with_their_arrival_times():
    desk = Desk(["L"])
    desk.inbox.receive(stroke("N", 1))
    desk.now += 0.5
    desk.layers.append("N")  # the layer is known now, but the held stroke is not applied yet:
    desk.inbox.receive(stroke("N", 2))  # this later stroke waits behind it
    desk.inbox.receive(stroke("L", 3))  # strokes on other layers do not wait
    assert desk.applied == [("L", 3, 50.5)]
    desk.inbox.release()  # the canvas calls it on every layer change
    assert desk.applied == [("L", 3, 50.5), ("N", 1, 50.0), ("N", 2, 50.5)]
    assert not desk.reports


def test_a_stroke_whose_layer_never_comes_is_reported_after_the_hold_and_dropped():
    desk = Desk()
    desk.inbox.receive(stroke("ghost"))
    desk.now += 1.0
    desk.inbox.receive(stroke("late"))
    assert len(desk.checks) == 1  # one pending check at a time
    desk.now += HOLD_UNKNOWN_LAYER_S - 1.0
    desk.run_checks()  # "ghost" waited its hold, "late" did not: it waits for the next check
    assert desk.reports == ["ignored a message from the browser: unknown layer 'ghost'; known layers: []"]
    assert len(desk.checks) == 1
    desk.layers.append("late")
    desk.run_checks()
    assert desk.applied == [("late", 255, 51.0)] and len(desk.reports) == 1 and not desk.checks


def test_held_strokes_are_bounded(monkeypatch):
    monkeypatch.setattr(stroke_inbox, "HELD_STROKE_BYTES", 100)
    desk = Desk()
    desk.inbox.receive(stroke("N", 1, size=8))  # 64 bytes
    with pytest.raises(ProtocolError, match="unknown layer 'N'"):
        desk.inbox.receive(stroke("N", 2, size=8))  # 128 bytes held would be too many
    desk.inbox.receive(stroke("N", 3, size=6))  # 100 bytes: just fits
    desk.layers.append("N")
    desk.inbox.release()
    assert [value for _, value, _ in desk.applied] == [1, 3]  # the refused stroke was not kept


def test_a_held_stroke_that_fails_is_reported_and_the_others_are_still_applied():
    desk = Desk()
    for value in (1, 13, 2):
        desk.inbox.receive(stroke("N", value))
    desk.layers.append("N")
    desk.inbox.release()
    assert [value for _, value, _ in desk.applied] == [1, 2]
    assert desk.reports == ["ignored a message from the browser: ValueError: an unlucky stroke"]
