"""Driving the real generation loop like a person in a browser would, and measuring it.

A `SemanticCanvas` (the real widget, kernel side) drives a `StreamRunner`; its sender is captured
and acknowledges every frame at once, like a browser that keeps up. A `Painter` thread sends mask
patches at ~20 Hz through the canvas's message handler, like a painting user. Stroke-to-frame latency
is measured from a patch's arrival to the send of the first frame whose canvas snapshot holds it.

`straightforward(pipeline)` and `straightforward_runner(runner)` turn the same objects into the
`--baseline` path: prompts re-encoded and all masks re-preprocessed every frame, eager model calls on
every (slot, layer) item,
synchronous decode + copy to the host, and JPEG encoding on the generation thread.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from typing import Any

import numpy as np
import torch

from semdraw_widget.engine import cpu_threads

STAGES = ("mask_prep", "launch", "unet", "blend", "decode", "encode", "send")
RUNNER_KEYS = {"sync": "mask_prep", "generate": "launch"}


# ---- the straightforward path --------------------------------------------------------------------
class StraightforwardPipeline:
    """A StreamMultiDiffusion used the straightforward way: nothing cached, decode and copy synchronous."""

    def __init__(self, stream: Any):
        self._stream = stream
        stream._scene.skip_empty_items = False  # the model is called on every (slot, layer) item

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __call__(self, output_type: str = "pil"):
        return self._stream(output_type=output_type)

    def apply_updates(self) -> None:
        forget_caches(self._stream)
        self._stream.apply_updates()

    def decode(self, latent: torch.Tensor, output_type: str = "pil"):
        return torch.from_numpy(self._stream.decode(latent, "np"))  # waits for the device, on this thread


def forget_caches(stream: Any) -> None:
    """Drop every cached product: prompt embeddings, per-layer mask weights, the assembled batch."""
    scene = stream._scene
    for layer in scene.stack():
        layer.weights = None
    scene.invalidate()
    embeddings = getattr(stream.model, "_embeddings", None)
    if embeddings is not None:
        embeddings.clear()


class InlineExecutor:
    """Runs submitted work at once, in the submitting thread (the baseline encodes on the generation thread)."""

    def submit(self, fn, *args, **kwargs):
        fn(*args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        pass


# ---- the scene --------------------------------------------------------------------------------------
PROMPTS = ["a red apple", "a green pear", "a blue ceramic cup", "a lemon", "a bunch of grapes", "a teapot", "a candle", "a plum"]


def layer_centres(count: int, width: int, height: int) -> list[tuple[int, int]]:
    return [
        (int(width * (0.5 + 0.22 * math.cos(2 * math.pi * i / max(count, 1)))),
         int(height * (0.5 + 0.22 * math.sin(2 * math.pi * i / max(count, 1)))))
        for i in range(count)
    ]


def disc(width: int, height: int, cx: int, cy: int, radius: int) -> np.ndarray:
    ys, xs = np.ogrid[:height, :width]
    return (((xs - cx) ** 2 + (ys - cy) ** 2) <= radius**2).astype(np.uint8) * 255


def make_canvas(pipeline: Any, layers: int, mask_strength: float = 1.0):
    """A canvas with `layers` prompts counting the background prompt as one (1 = one painted layer alone)."""
    from semdraw_widget import SemanticCanvas

    width, height = pipeline.width, pipeline.height
    painted = max(1, layers - 1)
    canvas = SemanticCanvas(width, height, pipeline=pipeline, background_prompt="a wooden table" if layers > 1 else "")
    ids = []
    for i, (cx, cy) in enumerate(layer_centres(painted, width, height)):
        layer_id = canvas.add_layer(PROMPTS[i % len(PROMPTS)], mask_strength=mask_strength)
        canvas.set_mask(layer_id, disc(width, height, cx, cy, int(min(width, height) * 0.2)))
        ids.append(layer_id)
    return canvas, ids


# ---- the painting person ----------------------------------------------------------------------------
class Painter(threading.Thread):
    """Sends one brush dab (a mask patch) every 1/rate s, round-robin over the layers, through the canvas."""

    def __init__(self, canvas: Any, layer_ids: list[str], rate_hz: float = 20.0):
        super().__init__(name="bench-painter", daemon=True)
        self.canvas, self.layer_ids, self.period = canvas, layer_ids, 1.0 / rate_hz
        self.patches: list[tuple[float, float]] = []  # (arrival, applied) perf_counter times
        self.halt = threading.Event()
        self.brush = max(8, canvas.width // 16)

    def run(self) -> None:
        width, height = self.canvas.width, self.canvas.height
        centres = layer_centres(len(self.layer_ids), width, height)
        radius = min(width, height) * 0.2  # on the rim of the layer's disc, so every dab changes its mask
        dabs = [memoryview(np.full((self.brush, self.brush), value, np.uint8).tobytes()) for value in (255, 0)]
        tick, i = time.perf_counter(), 0
        while not self.halt.is_set():
            index = i % len(self.layer_ids)
            step = i // len(self.layer_ids)
            angle = 0.35 * step
            dab = dabs[(step // 18) % 2]  # one round painting, the next erasing
            cx, cy = centres[index]
            x = int(min(max(cx + radius * math.cos(angle) - self.brush / 2, 0), width - self.brush))
            y = int(min(max(cy + radius * math.sin(angle) - self.brush / 2, 0), height - self.brush))
            content = {"type": "mask", "layer": self.layer_ids[index], "x": x, "y": y, "w": self.brush,
                       "h": self.brush, "enc": "raw", "rev": i + 1}
            arrival = time.perf_counter()
            self.canvas._handle_custom_msg(content, [dab])
            self.patches.append((arrival, time.perf_counter()))
            i += 1
            tick += self.period
            self.halt.wait(max(0.0, tick - time.perf_counter()))


# ---- one measured run ---------------------------------------------------------------------------------
class Recorder:
    """The captured browser: keeps frame messages with their send times and acknowledges each at once."""

    def __init__(self, canvas: Any):
        self.canvas = canvas
        self.frames: list[tuple[float, dict]] = []
        self.snapshots: list[float] = []
        self.send_ms: list[tuple[str, float]] = []  # (format, ms) per frame sent, in sending order
        self.lock = threading.Lock()
        canvas.send = self.send
        state = canvas.state
        original = state.snapshot

        def snapshot():
            taken = original()
            with self.lock:
                self.snapshots.append(time.perf_counter())
            return taken

        state.snapshot = snapshot

    def send(self, content: dict, buffers: list | None = None) -> None:
        if content.get("type") == "frame":
            with self.lock:
                self.frames.append((time.perf_counter(), content))
            self.canvas._handle_custom_msg({"type": "ack", "seq": content["seq"]}, [])

    def jpeg_frames(self) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, c) for t, c in self.frames if c["format"] == "jpeg"]


def time_send(sender: Any, recorder: Recorder) -> None:
    original = sender._send

    def timed(content, buffers):
        started = time.perf_counter()
        original(content, buffers)
        recorder.send_ms.append((content["format"], (time.perf_counter() - started) * 1e3))

    sender._send = timed


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def measure_path(pipeline: Any, layers: int, frames: int, warmup_frames: int, baseline: bool, rate_hz: float = 20.0,
                 timeout_s: float = 300.0, mask_strength: float = 1.0, settle_timeout_s: float = 30.0,
                 bare_repeats: int = 10) -> dict:
    """Paint for `warmup_frames + frames` frames and summarise the last `frames`; then let the scene settle."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2: frames/s is measured between frames (got {frames})")
    device = pipeline.device
    driven = StraightforwardPipeline(pipeline) if baseline else pipeline
    canvas, ids = make_canvas(driven, layers, mask_strength)
    runner = canvas._runner
    if baseline:
        runner.sender._encoder.shutdown(wait=True)
        runner.sender._encoder = InlineExecutor()
    recorder = Recorder(canvas)
    time_send(runner.sender, recorder)
    warm_up_s = []
    if getattr(pipeline, "compile", None):
        original_warm_up = pipeline.warm_up

        def timed_warm_up(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original_warm_up(*args, **kwargs)
            finally:
                warm_up_s.append(time.perf_counter() - started)

        pipeline.warm_up = timed_warm_up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    painter = Painter(canvas, ids, rate_hz)
    painter.start()
    started = time.perf_counter()
    canvas.start()
    deadline = started + timeout_s
    ready_s = None
    try:
        # measure the steady state: count frames only once the fast path is ready (a background compile done)
        first = None
        while first is None or len(recorder.jpeg_frames()) < first + warmup_frames + frames:
            if not canvas.running:
                raise RuntimeError(f"the stream stopped: {canvas.status}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(recorder.jpeg_frames())} frames in {timeout_s:.0f} s ({canvas.status})")
            if first is None and recorder.jpeg_frames() and not (
                getattr(pipeline, "compiling", False) or getattr(pipeline, "needs_warm_up", False)
            ):
                first, ready_s = len(recorder.jpeg_frames()), time.perf_counter() - started
            time.sleep(0.005)
    finally:
        painter.halt.set()
        painter.join()
    sent = recorder.jpeg_frames()[first + warmup_frames:first + warmup_frames + frames]
    window = (sent[0][0], sent[-1][0])
    fps = (len(sent) - 1) / (window[1] - window[0])
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for _, content in sent:
        for key, value in content["stats"]["breakdown"].items():
            stages.setdefault(RUNNER_KEYS.get(key, key), []).append(value)
    # the same frames as `sent`: JPEG sends, counted from the first frame of the ready path
    stages["send"] = [ms for fmt, ms in recorder.send_ms if fmt == "jpeg"][first + warmup_frames:first + warmup_frames + frames]
    # latency: each patch -> the first frame whose snapshot was taken after the patch was applied
    all_frames = recorder.jpeg_frames()
    with recorder.lock:
        snapshots = list(recorder.snapshots)
    latencies = []
    for arrival, applied in painter.patches:
        if arrival < window[0]:
            continue
        index = next((i for i, taken in enumerate(snapshots[:len(all_frames)]) if taken > applied), None)
        if index is None or all_frames[index][0] > window[1]:
            continue
        latencies.append((all_frames[index][0] - arrival) * 1e3)
    peak = {}
    if device.type == "cuda":
        peak = {"allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
                "reserved_gb": torch.cuda.max_memory_reserved(device) / 1e9}
    still = settle(canvas, pipeline, settle_timeout_s)
    canvas.stop()
    bare = bare_model_ms(pipeline, bare_repeats)
    canvas.close()
    frame_ms = 1e3 / fps
    return {
        "fps": fps,
        "frame_ms": frame_ms,
        "frames": len(sent),
        "stages_ms": {name: statistics.median(v) for name, v in stages.items() if v},
        "latency_ms": {"median": percentile(latencies, 50), "p95": percentile(latencies, 95), "patches": len(latencies)},
        "peak_gpu_memory": peak,
        "region_mode": pipeline.region_mode,
        "model_batch": model_batch(pipeline),
        "bare_model_ms": bare,
        "frame_over_bare_model": frame_ms / bare if bare else None,
        "warm_up_s": warm_up_s,
        "ready_s": ready_s,  # from start() until the fast path was ready (compile included)
        "compile_error": getattr(pipeline, "compile_error", None),
        "calls": dict(getattr(pipeline.predictor, "calls", {})),
        "still": still,
    }


def settle(canvas: Any, pipeline: Any, timeout_s: float = 30.0) -> dict:
    """Stop painting, wait for the still image, then check that no model calls follow."""
    started = time.perf_counter()
    # The runner's own test too: a "still" status from before the last strokes may not have been replaced yet.
    while not (canvas._runner._is_still() and canvas.status.startswith("still")):
        if time.perf_counter() - started > timeout_s:
            return {"converged": False}
        time.sleep(0.005)
    converged_s = time.perf_counter() - started
    calls = pipeline.unet_calls
    time.sleep(1.0)
    return {"converged": True, "settle_s": converged_s, "model_calls_in_1s_after": pipeline.unet_calls - calls}


def model_batch(pipeline: Any) -> int:
    inputs = pipeline.batch_inputs()
    return 0 if inputs is None else int(inputs[0].shape[0])


def bare_model_ms(pipeline: Any, repeats: int = 10) -> float | None:
    """Milliseconds of one call of the frame's model batch alone, as the frames call it (graph or eager), timed
    on a thread of its own as the frames are (the stream thread).

    Not on the calling thread: on a CPU, torch's OpenMP team belongs to the thread that runs the work, and the
    main thread's team -- made at import, its workers spin-waiting at every barrier -- can run the same batch
    many times slower than a fresh thread's when another process holds a core (this workplace's 2-core machine:
    967 ms against the frames' 29 ms). The calling thread's idle workers are freed first, as the canvas's start
    frees the kernel thread's (engine/cpu_threads.py). The frames' own model time is `stages_ms["unet"]`."""
    inputs = pipeline.batch_inputs()
    if inputs is None:
        return None
    cpu_threads.release_idle_workers()
    result: list[float] = []
    failure: list[BaseException] = []

    def measure() -> None:
        try:
            result.append(_time_model_calls(pipeline.predictor, pipeline.device, inputs, repeats))
        except BaseException as exc:  # raised again on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=measure, name="bench-bare-model")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _time_model_calls(predictor: Any, device: torch.device, inputs: tuple, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(3):
            predictor.predict(*inputs)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(repeats):
                predictor.predict(*inputs)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / repeats
        started = time.perf_counter()
        for _ in range(repeats):
            predictor.predict(*inputs)
        return (time.perf_counter() - started) * 1e3 / repeats


# ---- the same frames? --------------------------------------------------------------------------------
def compare_paths(model: Any, height: int, width: int, layers: int, compile: Any, frames: int = 8,
                  mask_strength: float = 1.0) -> dict:
    """The baseline and the fast path on the same scene and seed, frame by frame (uint8 differences)."""
    from semdraw_widget.engine import StreamMultiDiffusion
    from semdraw_widget.engine.stream import HostFrame

    def scene(stream):
        painted = max(1, layers - 1)
        if layers > 1:
            stream.update_background(prompt="a wooden table")
        for i, (cx, cy) in enumerate(layer_centres(painted, width, height)):
            stream.update_single_layer(i, prompt=PROMPTS[i % len(PROMPTS)], mask_strength=mask_strength,
                                       mask=disc(width, height, cx, cy, int(min(width, height) * 0.2)))
        return stream

    base = scene(StreamMultiDiffusion(model.device, model=model, height=height, width=width))
    base._scene.skip_empty_items = False  # the baseline calls the model on every (slot, layer) item
    fast = scene(StreamMultiDiffusion(model.device, model=model, height=height, width=width, compile=compile))
    fast.warm_up()
    differences, finite = [], True
    for _ in range(frames):
        forget_caches(base)
        base.apply_updates()
        expected = base(output_type="np").astype(np.int16)
        fast.apply_updates()
        latent = fast(output_type="latent")
        finite &= bool(torch.isfinite(latent).all())
        got = HostFrame(fast.decode(latent, "pt")).array().astype(np.int16)
        differences.append(np.abs(got - expected))
    stacked = np.stack(differences)
    return {"frames": frames, "max_abs_uint8": int(stacked.max()), "mean_abs_uint8": float(stacked.mean()), "finite": finite,
            "host_syncs_in_10_frames": count_host_syncs(fast)}


def count_host_syncs(stream: Any, frames: int = 10) -> int | None:
    """Synchronising CUDA calls made by `frames` frames of the fast frame path (no updates between them)."""
    import warnings

    from semdraw_widget.engine.stream import HostFrame

    if stream.device.type != "cuda":
        return None
    stream.apply_updates()
    torch.cuda.synchronize(stream.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pending = [HostFrame(stream.decode(stream(output_type="latent"), "pt")) for _ in range(frames)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    pending[-1].array()
    return sum("synchroniz" in str(w.message) for w in caught)
