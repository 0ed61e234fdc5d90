"""A soak: stream for minutes while strokes pour in, and check that nothing leaks, is lost or comes late.

    python -m benchmarks.soak --seconds 600          # the run docs/reliability.md records
    python -m benchmarks.soak --seconds 4            # CI's short run (tests/test_benchmarks_smoke.py)

A real `SemanticCanvas` streams the tiny model (random weights, CPU) on a small canvas. A painter thread
sends random strokes (random layer, rectangle and coverage, raw or deflated) through the canvas's message
entry `_on_msg`, where a view's messages arrive; a captured browser acknowledges every frame the same way.
Every few seconds the stream is stopped and started again. Along the way the process's memory (RSS) and
threads are sampled. At the end it checks that:

- no stroke was lost: the kernel's masks equal what the painter painted, pixel for pixel;
- no frame came after a stop: every frame sent between `stop()` and the next `start()` was made before
  `stop()` returned, and the stream's thread ended each time;
- nothing was reported: the painter's strokes are all valid, so the canvas sent no error message.

It prints a summary (and writes it as JSON with --json); the exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import zlib
from typing import Any

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to stream (default 60)")
    parser.add_argument("--size", type=int, default=64, help="canvas side in pixels (default 64)")
    parser.add_argument("--layers", type=int, default=3, help="painted layers (default 3)")
    parser.add_argument("--stroke-rate", type=float, default=100.0, help="strokes per second (default 100)")
    parser.add_argument("--cycle-seconds", type=float, default=5.0, help="stop and restart the stream this often")
    parser.add_argument("--warmup-seconds", type=float, default=2.0,
                        help="streaming before the starting memory is taken (the first frames allocate)")
    parser.add_argument("--sample-seconds", type=float, default=0.5, help="memory and threads are sampled this often")
    parser.add_argument("--seed", type=int, default=0, help="the painter's random seed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the summary here")
    return parser.parse_args(argv)


def process_status() -> dict[str, float]:
    """Resident memory (MB) and OS threads of this process, from /proc (Linux)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    return {"rss_mb": int(fields["VmRSS"]) / 1024, "os_threads": int(fields["Threads"])}


class Browser:
    """The captured view: counts frames, acknowledges each at once through `_on_msg`, keeps error messages, and
    notes frames made after a stop (their `stats["frames"]` is the runner's count when each was made)."""

    def __init__(self, canvas: Any):
        self.canvas = canvas
        self.lock = threading.Lock()
        self.frames = 0
        self.errors: list[str] = []
        self.stopped_at: int | None = None  # frames made when stop() returned; None while streaming
        self.frames_after_stop = 0
        canvas.send = self.send

    def send(self, content: dict, buffers: list | None = None) -> None:
        kind = content.get("type")
        if kind == "frame":
            with self.lock:
                self.frames += 1
                if self.stopped_at is not None and content["stats"]["frames"] > self.stopped_at:
                    self.frames_after_stop += 1
            self.canvas._handle_custom_msg({"type": "ack", "seq": content["seq"]}, [])
        elif kind == "error":
            with self.lock:
                self.errors.append(content["message"])


class Painter(threading.Thread):
    """Random strokes at `rate` per second through the canvas's message entry; `expected` is what it painted."""

    def __init__(self, canvas: Any, layer_ids: list[str], rate: float, seed: int):
        super().__init__(name="soak-painter", daemon=True)
        self.canvas, self.layer_ids, self.period = canvas, layer_ids, 1.0 / rate
        self.rng = np.random.default_rng(seed)
        self.expected = {layer_id: np.zeros((canvas.height, canvas.width), np.uint8) for layer_id in layer_ids}
        self.strokes = 0
        self.pixels = 0
        self.halt = threading.Event()

    def stroke(self, number: int) -> None:
        rng, width, height = self.rng, self.canvas.width, self.canvas.height
        layer_id = self.layer_ids[rng.integers(len(self.layer_ids))]
        w, h = (int(v) for v in rng.integers(1, max(2, min(width, height) // 4), 2))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        # a brush dab (one value) or an eraser's soft edge (a ramp), as views send them
        data = (np.full((h, w), rng.integers(0, 256), np.uint8) if rng.random() < 0.5
                else rng.integers(0, 256, (h, w), dtype=np.uint8))
        enc = "deflate" if rng.random() < 0.5 else "raw"
        payload = zlib.compress(data.tobytes()) if enc == "deflate" else data.tobytes()
        content = {"type": "mask", "layer": layer_id, "x": x, "y": y, "w": w, "h": h, "enc": enc, "rev": number,
                   "view": "soak"}
        self.canvas._handle_custom_msg(content, [memoryview(payload)])
        self.expected[layer_id][y : y + h, x : x + w] = data
        self.strokes += 1
        self.pixels += w * h

    def run(self) -> None:
        tick = time.perf_counter()
        while not self.halt.is_set():
            self.stroke(self.strokes + 1)
            tick += self.period
            self.halt.wait(max(0.0, tick - time.perf_counter()))


def stream_threads() -> int:
    return sum(thread.name == "semdraw-stream" for thread in threading.enumerate())


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def soak(args: argparse.Namespace) -> dict:
    from semdraw_widget import SemanticCanvas
    from semdraw_widget.engine import StreamMultiDiffusion

    after_imports = process_status()
    pipeline = StreamMultiDiffusion(args.device, hf_key="tiny", width=args.size, height=args.size)
    canvas = SemanticCanvas(args.size, args.size, pipeline=pipeline, background_prompt="a wooden table")
    layer_ids = [canvas.add_layer(f"object {i}") for i in range(args.layers)]
    browser = Browser(canvas)
    runner = canvas._runner
    threads_before = {"python": threading.active_count(), **{"os": process_status()["os_threads"]}}
    painter = Painter(canvas, layer_ids, args.stroke_rate, args.seed)
    samples: list[dict] = []
    stops = stream_threads_left = 0
    started = time.perf_counter()
    canvas.start()
    painter.start()
    next_sample = next_cycle = started
    next_cycle += args.cycle_seconds
    try:
        while (now := time.perf_counter()) - started < args.seconds:
            if not painter.is_alive():
                raise RuntimeError("the painter stopped: a stroke raised (see above)")
            if now >= next_sample:
                samples.append({"t": now - started, "python_threads": threading.active_count(), **process_status()})
                next_sample += args.sample_seconds
            if now >= next_cycle:
                canvas.stop()
                with browser.lock:
                    browser.stopped_at = runner.frames_generated
                stops += 1
                stream_threads_left += not wait_for(lambda: stream_threads() == 0, timeout=5.0)
                time.sleep(0.2)  # frames made before the stop may still leave; later ones must not
                with browser.lock:
                    browser.stopped_at = None
                canvas.start()
                next_cycle += args.cycle_seconds
            time.sleep(0.01)
    finally:
        painter.halt.set()
        painter.join()
        canvas.stop()
    with browser.lock:
        browser.stopped_at = runner.frames_generated
    stops += 1
    stream_threads_left += not wait_for(lambda: stream_threads() == 0, timeout=5.0)
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    lost = {layer_id: int((canvas.state.coverage(layer_id) != painter.expected[layer_id]).sum()) for layer_id in layer_ids}
    end = process_status()
    canvas.close()
    threads_after_close = {"python": threading.active_count(), "os": process_status()["os_threads"]}

    warm = [sample for sample in samples if sample["t"] >= args.warmup_seconds] or samples
    summary = {
        "seconds": round(elapsed, 1),
        "canvas": f"{args.size}x{args.size}",
        "layers": args.layers,
        "frames": browser.frames,
        "frames_per_s": round(browser.frames / elapsed, 1),
        "strokes": painter.strokes,
        "stroke_pixels": painter.pixels,
        "stops": stops,
        "frames_after_stop": browser.frames_after_stop,
        "stream_threads_left_after_stop": stream_threads_left,
        "lost_pixels": sum(lost.values()),
        "errors": len(browser.errors),
        "first_errors": browser.errors[:3],
        "rss_mb": {"after_imports": round(after_imports["rss_mb"], 1), "start": round(warm[0]["rss_mb"], 1),
                   "end": round(end["rss_mb"], 1), "max": round(max(s["rss_mb"] for s in warm), 1)},
        "python_threads": {"before_start": threads_before["python"], "min": min(s["python_threads"] for s in samples),
                           "max": max(s["python_threads"] for s in samples), "after_close": threads_after_close["python"]},
        "os_threads": {"before_start": threads_before["os"], "min": min(s["os_threads"] for s in samples),
                       "max": max(s["os_threads"] for s in samples), "after_close": threads_after_close["os"]},
        "samples": len(samples),
    }
    summary["ok"] = (summary["frames"] > 0 and summary["strokes"] > 0 and summary["lost_pixels"] == 0
                     and summary["frames_after_stop"] == 0 and summary["stream_threads_left_after_stop"] == 0
                     and summary["errors"] == 0)
    return summary


def report(summary: dict) -> str:
    rss, py, os_threads = summary["rss_mb"], summary["python_threads"], summary["os_threads"]
    lines = [
        f"soak: {summary['seconds']} s on a {summary['canvas']} canvas with {summary['layers']} layers (tiny model)",
        f"  frames        {summary['frames']} ({summary['frames_per_s']}/s), {summary['stops']} stops",
        f"  strokes       {summary['strokes']} ({summary['stroke_pixels']} pixels painted)",
        f"  lost pixels   {summary['lost_pixels']}",
        f"  frames after a stop {summary['frames_after_stop']}; stream threads left running {summary['stream_threads_left_after_stop']}",
        f"  errors        {summary['errors']} {summary['first_errors'] or ''}".rstrip(),
        f"  memory (RSS)  start {rss['start']} MB, end {rss['end']} MB, max {rss['max']} MB (after the imports {rss['after_imports']} MB)",
        f"  threads       Python {py['min']}-{py['max']} while streaming ({py['before_start']} before, {py['after_close']} after "
        f"close); OS {os_threads['min']}-{os_threads['max']} ({os_threads['before_start']} before, {os_threads['after_close']} after)",
        f"  {'OK' if summary['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    summary = soak(args)
    summary["command"] = "python -m benchmarks.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    print(report(summary))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
