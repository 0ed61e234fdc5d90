"""FrameSender on its own: the window of unacknowledged frames, the order frames leave in, their figures."""

import io
import threading

import numpy as np
import pytest
from PIL import Image

from semdraw_widget.frame_sender import ACK_TIMEOUT_S, FrameSender, FrameTiming


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


class Frame:
    """A frame whose pixels are at hand (the engine's HostFrame waits for its copy to the host)."""

    def __init__(self, value=0, size=(8, 16)):
        self.rgb = np.full((*size, 3), value, np.uint8)

    def array(self):
        return self.rgb


class Broken:
    def array(self):
        raise RuntimeError("the copy to the host failed")


@pytest.fixture
def make_sender():
    made = []

    def factory(max_in_flight=2, clock=None):
        sent = []
        sender = FrameSender(lambda content, buffers: sent.append((content, list(buffers))), max_in_flight,
                             clock=clock or Clock())
        sender.sent = sent
        made.append(sender)
        return sender

    yield factory
    for sender in made:
        sender.close()


def timing(clock, arrival=None, frames=1, **breakdown):
    return FrameTiming(started=clock() - 0.05, breakdown=breakdown or {"sync": 1.0, "generate": 40.0},
                       stroke_arrival=arrival, frames_generated=frames)


def drain(sender):
    """Wait until every frame queued so far has been sent."""
    done = threading.Event()
    sender.after_sent(done.set)
    assert done.wait(30)


def test_a_frame_may_be_drawn_only_while_fewer_than_max_in_flight_are_unacknowledged(make_sender):
    clock = Clock()
    sender = make_sender(max_in_flight=2, clock=clock)
    assert sender.may_send() and sender.in_flight == 0
    sender.send_frame(Frame(), timing(clock))
    assert sender.may_send() and sender.in_flight == 1
    sender.send_frame(Frame(), timing(clock))
    assert not sender.may_send() and sender.in_flight == 2
    sender.acknowledge(1)
    assert sender.may_send() and sender.in_flight == 1
    sender.acknowledge(1)  # an acknowledgement again, or an older one, changes nothing
    sender.acknowledge(0)
    assert sender.in_flight == 1
    sender.acknowledge(99)  # a number never given counts as the last one given
    assert sender.in_flight == 0
    sender.send_frame(Frame(), timing(clock))
    assert sender.in_flight == 1
    drain(sender)
    assert [content["seq"] for content, _ in sender.sent] == [1, 2, 3]


def test_a_view_silent_for_the_ack_timeout_is_taken_to_have_seen_every_frame(make_sender):
    clock = Clock()
    sender = make_sender(max_in_flight=1, clock=clock)
    clock.now += 10 * ACK_TIMEOUT_S  # idle long before the first frame: the wait is timed from that frame
    sender.send_frame(Frame(), timing(clock))
    clock.now += ACK_TIMEOUT_S / 2
    assert not sender.may_send()
    sender.acknowledge(1)
    sender.send_frame(Frame(), timing(clock))
    clock.now += ACK_TIMEOUT_S * 0.9  # timed from the last acknowledgement
    assert not sender.may_send()
    clock.now += ACK_TIMEOUT_S * 0.2
    assert sender.may_send() and sender.in_flight == 0


def test_frames_leave_in_order_with_every_figure_the_stats_line_shows(make_sender):
    clock = Clock()
    sender = make_sender(max_in_flight=10, clock=clock)
    for value in (10, 20, 30):
        sender.send_frame(Frame(value), timing(clock, frames=value // 10))
        drain(sender)  # sent before the clock moves on
        clock.now += 0.1
    contents = [content for content, _ in sender.sent]
    assert [c["seq"] for c in contents] == [1, 2, 3] and [c["stats"]["frames"] for c in contents] == [1, 2, 3]
    last = contents[-1]
    assert (last["type"], last["format"], last["width"], last["height"]) == ("frame", "jpeg", 16, 8)
    # what js/src shows under the image: frames/s, latency, frame time and the breakdown by stage
    assert {"fps", "latency_ms", "frame_ms", "breakdown"} <= set(last["stats"])
    assert last["stats"]["fps"] == pytest.approx(10.0)  # three frames 0.1 s apart
    assert set(last["stats"]["breakdown"]) == {"sync", "generate", "encode"}
    assert last["stats"]["latency_ms"] is None  # no stroke answered yet
    image = Image.open(io.BytesIO(bytes(sender.sent[-1][1][0])))
    assert image.format == "JPEG" and image.size == (16, 8)
    assert sender.stats == last["stats"]


def test_latency_is_kept_until_a_frame_answers_a_new_stroke_and_the_still_frame_repeats_the_figures(make_sender):
    clock = Clock()
    sender = make_sender(max_in_flight=10, clock=clock)
    sender.send_frame(Frame(), timing(clock, arrival=clock() - 0.25))
    sender.send_frame(Frame(), timing(clock))  # answers no new stroke
    sender.send_still(Frame())
    drain(sender)
    (first, _), (second, _), (still, buffers) = sender.sent
    assert first["stats"]["latency_ms"] == pytest.approx(250.0) and second["stats"]["latency_ms"] == pytest.approx(250.0)
    assert still["format"] == "png" and still["stats"] == second["stats"] and still["seq"] == 3
    assert Image.open(io.BytesIO(bytes(buffers[0]))).format == "PNG"


def test_a_new_view_gets_the_latest_frame_and_an_empty_window(make_sender):
    clock = Clock()
    sender = make_sender(max_in_flight=2, clock=clock)
    sender.resend_latest()  # nothing sent yet: nothing to resend
    assert not sender.sent
    sender.send_frame(Frame(1), timing(clock))
    sender.send_frame(Frame(2), timing(clock))
    drain(sender)
    assert not sender.may_send()
    sender.resend_latest()
    assert sender.may_send() and sender.in_flight == 0
    assert sender.sent[-1] == sender.sent[1]


def test_a_frame_that_cannot_be_encoded_is_logged_and_the_next_one_still_goes(make_sender, caplog):
    clock = Clock()
    sender = make_sender(clock=clock)
    sender.send_frame(Broken(), timing(clock))
    sender.send_frame(Frame(), timing(clock))
    drain(sender)
    assert [content["seq"] for content, _ in sender.sent] == [2]
    assert "could not encode or send frame 1" in caplog.text


def test_the_figures_handed_out_are_a_copy(make_sender):
    clock = Clock()
    sender = make_sender(clock=clock)
    sender.send_frame(Frame(), timing(clock))
    drain(sender)
    sender.stats["breakdown"]["sync"] = -1
    assert sender.stats["breakdown"]["sync"] == sender.sent[0][0]["stats"]["breakdown"]["sync"] != -1
