"""Frames to the browser: their numbers, the window of unacknowledged ones, encoding, and their figures.

Flow control is two counters, as in jupyter_rfb: every frame gets the next sequence number `seq`, the
view acknowledges each frame it has displayed, and the frames in flight are the last number given minus
the highest acknowledged one. The stream draws a new frame only while that is below `max_in_flight`
(`may_send`), so a slow view slows the stream instead of piling frames up. A view that stops answering
(a closed tab) is taken to have seen everything after `ACK_TIMEOUT_S`.

Encoding runs on one thread of its own, in `seq` order: it waits for the frame's copy to the host,
encodes it (JPEG while the scene changes, PNG once still), measures, and sends. The figures of the
latest frame (`stats`) travel in its frame message, the one channel the view reads them from; Python
reads them as `SemanticCanvas.stats`. See docs/architecture.md, "A frame" and "The wire protocol".
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from . import protocol

log = logging.getLogger("semdraw_widget")

#: A browser that never acknowledges (a closed tab) must not freeze the stream forever.
ACK_TIMEOUT_S = 10.0
#: frames/s counts the frames sent within this many seconds.
FPS_WINDOW_S = 2.0


@dataclass(frozen=True)
class FrameTiming:
    """What one frame's figures are made from (times in `time.perf_counter` seconds)."""

    started: float  # when the work on this frame began
    breakdown: dict[str, float]  # milliseconds per stage so far; "encode" and the engine's stages are added
    stroke_arrival: float | None  # the oldest stroke this frame answers; None: no new stroke to time
    frames_generated: int  # this frame's number among all frames the runner made
    stages: Any = None  # the engine's stage marks (`FrameTimer`), read once the frame is on the host
    region_mode: str | None = None  # how the frame was made ("exact" or "attention"); None: not said


class FrameSender:
    """Numbers, throttles, encodes and sends one canvas's frames; `send(content, buffers)` delivers them."""

    def __init__(self, send: Callable[[dict, list], None], max_in_flight: int = 2, jpeg_quality: int = 85,
                 clock: Callable[[], float] = time.perf_counter):
        self.max_in_flight = max_in_flight
        self.jpeg_quality = jpeg_quality
        self._send = send
        self._clock = clock
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="semdraw-encode")
        # Guards `_seq` (the last number given), `_acked` (the highest acknowledged) and `_last_ack_time`.
        self._counters = threading.Lock()
        # Held while a frame is numbered and handed to the encoder, so frames leave in `seq` order. Not the
        # counters lock: an encoder that sends inline to a view that acknowledges at once (the benchmark's)
        # calls `acknowledge` from inside `submit`.
        self._queue_order = threading.Lock()
        self._seq = 0
        self._acked = 0
        self._last_ack_time = clock()
        self._latest_message: tuple[dict, list] | None = None  # for a view that joins later
        self._send_times: list[float] = []  # within the last FPS_WINDOW_S, for frames/s (encoder thread only)
        self._stats: dict = {}  # replaced, never changed in place: other threads read it

    # ---- flow control -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Frames sent and not acknowledged yet."""
        with self._counters:
            return self._seq - self._acked

    def may_send(self) -> bool:
        """Whether a new frame may be drawn now: fewer than `max_in_flight` frames in flight. After
        `ACK_TIMEOUT_S` without an acknowledgement, the frames in flight are taken as seen."""
        with self._counters:
            if self._seq - self._acked < self.max_in_flight:
                return True
            now = self._clock()
            if now - self._last_ack_time <= ACK_TIMEOUT_S:
                return False
            self._acked, self._last_ack_time = self._seq, now  # nobody is watching any more: don't freeze
            return True

    def acknowledge(self, seq: int) -> None:
        """The view displayed frame `seq` (and so every frame before it). Numbers never given are capped."""
        with self._counters:
            self._acked = max(self._acked, min(seq, self._seq))
            self._last_ack_time = self._clock()

    def resend_latest(self) -> None:
        """A new view: forget the frames the old one never acknowledged and send it the latest frame."""
        with self._counters:
            self._acked = self._seq
        if self._latest_message is not None:
            self._send(*self._latest_message)

    # ---- frames -------------------------------------------------------------------------------------
    def send_frame(self, frame: Any, timing: FrameTiming) -> None:
        """Number a changing frame and send it as JPEG with its figures. `frame.array()` gives its RGB uint8
        pixels, waiting for them if need be (`HostFrame`): it is called on the encoder thread."""
        self._queue(frame, "jpeg", timing)

    def send_still(self, frame: Any) -> None:
        """Number the settled frame and send it losslessly (PNG); it repeats the last frame's figures."""
        self._queue(frame, "png", None)

    def after_sent(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the encoder thread once every frame queued so far has been sent."""
        self._encoder.submit(callback)

    @property
    def stats(self) -> dict:
        """The latest frame's figures, as its frame message carried them ({} before the first frame)."""
        return copy.deepcopy(self._stats)

    def close(self) -> None:
        """Send what is queued, then end the encoder thread."""
        self._encoder.shutdown(wait=True)

    def _queue(self, frame: Any, fmt: str, timing: FrameTiming | None) -> None:
        with self._queue_order:
            with self._counters:
                if self._seq == self._acked:  # the window was empty: time the ack from now, not from a stale ack
                    self._last_ack_time = self._clock()
                self._seq += 1
                seq = self._seq
            self._encoder.submit(self._encode_and_send, seq, frame, fmt, timing)

    def _encode_and_send(self, seq: int, frame: Any, fmt: str, timing: FrameTiming | None) -> None:
        try:
            rgb = frame.array()  # waits for this frame's copy to the host, in this thread only
            breakdown = {} if timing is None else dict(timing.breakdown)
            if timing is not None and timing.stages is not None:
                breakdown.update(timing.stages.result())
            encode_start = self._clock()
            payload = protocol.encode_image(rgb, fmt, self.jpeg_quality)
            sent_at = self._clock()
            breakdown["encode"] = (sent_at - encode_start) * 1e3
            if timing is not None:
                self._stats = self._figures(timing, breakdown, sent_at)
            message = protocol.frame_message(seq, fmt, rgb.shape[1], rgb.shape[0], self._stats, payload)
            self._latest_message = message
            self._send(*message)
        except Exception:  # never let an encoder failure kill the executor silently
            log.exception("could not encode or send frame %s", seq)

    def _figures(self, timing: FrameTiming, breakdown: dict, sent_at: float) -> dict:
        """Every figure the view's stats line shows; a frame that answers no new stroke keeps the latency
        of the last one that did."""
        self._send_times = [t for t in self._send_times if sent_at - t < FPS_WINDOW_S] + [sent_at]
        span = self._send_times[-1] - self._send_times[0]
        fps = (len(self._send_times) - 1) / span if span > 0 else 0.0
        arrival = timing.stroke_arrival
        return {
            "fps": round(fps, 2),
            "frame_ms": round((sent_at - timing.started) * 1e3, 2),
            "breakdown": {name: round(ms, 2) for name, ms in breakdown.items()},
            "frames": timing.frames_generated,
            "latency_ms": round((sent_at - arrival) * 1e3, 2) if arrival is not None else self._stats.get("latency_ms"),
            **({} if timing.region_mode is None else {"region_mode": timing.region_mode}),
        }

