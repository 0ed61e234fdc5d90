"""The kernel-side generation loop: canvas state -> engine updates -> frames -> the browser.

Developer notes. One `StreamRunner` (and at most one thread) per canvas. The thread takes a consistent
snapshot of the canvas state, pushes only what changed into the engine, steps it once, and hands the
frame to an encoder thread that sends it as a binary message on the kernel's event loop. Frames carry
an increasing `seq`; the browser acknowledges each one it displays, and at most `max_in_flight` frames
may be unacknowledged. Once the engine reports `converged` (a still scene, fixed noise), the last frame
is resent as a lossless PNG and the thread sleeps until the next change: a still scene costs nothing.

The frame path never waits on the GPU: the frame is decoded to uint8 on the device and copied into
pinned host memory without blocking (`HostFrame`); the encoder thread waits for that copy, so
decoding, the copy and JPEG encoding overlap the next frame's work. To keep stroke-to-frame latency
low, the next frame is queued only once the previous frame's denoising step has finished (its decode
may still run), so the GPU never holds a backlog of frames made from stale masks. With
`compile=...` pipelines, new batch sizes get their CUDA graphs from this thread between frames, and
`compile="inductor"` compiles in a background thread while frames go on uncompiled; the canvas
status says so.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from . import protocol
from .engine.models.choice import load_pipeline, pipeline_notice  # noqa: F401 (the widget imports them from here)
from .engine.stream import HostFrame, device_event

log = logging.getLogger("semdraw_widget")

#: A browser that never acknowledges (a closed tab) must not freeze the stream forever.
ACK_TIMEOUT_S = 10.0

_live_runners: "weakref.WeakSet[StreamRunner]" = weakref.WeakSet()
_pipeline_locks: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()
# The runner whose layers the pipeline holds now. A weak reference, not id(): a new runner can reuse a
# closed one's id and would then wrongly trust the engine's leftover layers to be its own.
_pipeline_owner: "weakref.WeakKeyDictionary[Any, weakref.ref[StreamRunner]]" = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _lock_for(pipeline: Any) -> threading.Lock:
    """One lock per pipeline, so several canvases can share it safely (one frame at a time)."""
    with _registry_lock:
        lock = _pipeline_locks.get(pipeline)
        if lock is None:
            lock = _pipeline_locks[pipeline] = threading.Lock()
        return lock


def failure_hint(exc: BaseException) -> str:
    """What to do after the model failed (streaming, a step or a render), for the status line."""
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc):
        return "The GPU ran out of memory: use fewer layers or a smaller canvas, free other notebooks' GPU memory, then try again."
    return "See the kernel log for the traceback; fix the cause, then try again."


def check_pipeline(pipeline: Any, width: int, height: int) -> None:
    """A canvas needs a streaming pipeline of its own size."""
    if not callable(getattr(pipeline, "update_single_layer", None)):
        raise TypeError(
            f"a canvas needs a streaming pipeline, not a {type(pipeline).__name__}: pass "
            "pipeline=StreamMultiDiffusion(device, hf_key=..., width=..., height=...) (or model=...). "
            "StableMultiDiffusionPipeline makes single images: call it directly, outside the canvas."
        )
    for name, size in (("width", width), ("height", height)):
        if getattr(pipeline, name) != size:
            raise ValueError(
                f"the pipeline's {name} ({getattr(pipeline, name)}) differs from the canvas's ({size}); "
                "create both with the same size"
            )


class StreamRunner:
    """Drives one canvas's frames from a StreamMultiDiffusion-like pipeline."""

    def __init__(self, pipeline: Any, canvas: Any, max_in_flight: int = 2, jpeg_quality: int = 85):
        # the canvas checked both (`attach_pipeline`, its constructor) before it closed the runner it had
        self.pipeline = pipeline
        self.max_in_flight = max_in_flight
        self.jpeg_quality = jpeg_quality
        self._canvas = canvas
        self._state = canvas.state
        self._lock = _lock_for(pipeline)
        self._wake = threading.Event()
        self._counters = threading.Lock()
        self._queue_order = threading.Lock()
        self._thread: threading.Thread | None = None  # alive exactly while running (see _loop)
        self._life = threading.Lock()
        # Held while the flag drops and while a streamed frame is recorded, so a frame is either recorded
        # before stop() returns or dropped. Re-entrant: stop() also runs from a SIGINT handler on the kernel's
        # thread, possibly while that thread is inside stop() already.
        self._stopping = threading.RLock()
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="semdraw-encode")
        self._running = False
        self._closed = False
        self._seq = 0
        self._acked = 0
        self._last_ack_time = time.perf_counter()
        self._mirror: list[tuple[str, dict]] = []  # (layer id, settings) the engine holds, per engine layer index
        self._background_revision = -1
        self._seed = canvas.seed  # the canvas's seed, which the pipeline must use whenever this canvas drives it
        self._seed_request: int | None = self._seed
        self._latest_frame: HostFrame | None = None
        self._previous_step: Any = None  # device event: the last frame's denoising step is done
        self._latest_message: tuple[dict, list] | None = None
        self._still_sent = False
        self._frame_times: list[float] = []
        self._pending_arrival: float | None = None
        self._counted_arrivals: dict[str, float] = {}  # layer id -> the stroke time already counted
        self._started_at = 0.0  # strokes from before the stream started don't count as latency
        self._synced_revision: int | None = None
        self._routine_status = ""
        # layer id -> warning about its prompt, shown after the routine status until that prompt changes.
        # Replaced, never changed in place: other threads read it.
        self._prompt_warnings: dict[str, str] = {}
        self.frames_generated = 0
        self._state.add_change_listener(self._wake.set)
        _live_runners.add(self)

    # ---- control ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("this canvas was closed; create a new one")
        _install_interrupt_hooks()
        self._show_status(self._generating_status(), running=True)
        self._started_at = time.perf_counter()
        with self._life:
            self._running = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="semdraw-stream", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self, status: str = "paused") -> None:
        with self._stopping:
            self._running = False
        self._wake.set()
        self._show_status(status, running=False)

    def close(self) -> None:
        with self._stopping:
            self._closed = True
            self._running = False
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._encoder.shutdown(wait=True)
        self._state.remove_change_listener(self._wake.set)
        _live_runners.discard(self)

    def acknowledge(self, seq: int) -> None:
        with self._counters:
            self._acked = max(self._acked, min(seq, self._seq))
            self._last_ack_time = time.perf_counter()
        self._wake.set()

    def request_seed(self, seed: int) -> None:
        self._seed = self._seed_request = int(seed)
        self._wake.set()

    def resend_latest(self) -> None:
        """A new view: forget frames the old one never acknowledged and show it the latest frame."""
        with self._counters:
            self._acked = self._seq
        if self._latest_message is not None:
            self._send_frame_message(*self._latest_message)
        self._wake.set()

    def latest_image(self):
        from PIL import Image

        return None if self._latest_frame is None else Image.fromarray(self._latest_frame.array(), "RGB")

    def step(self):
        """One frame now, in the caller's thread; returns it as a PIL image."""
        if not self._running:
            self._started_at = time.perf_counter()  # a manual step has no stroke-to-frame latency
        self._produce_frame_here()
        return self.latest_image()

    def render(self):
        """Frames until the scene settles, in the caller's thread; the settled image is sent as a PNG
        and returned (see `SemanticCanvas.render`)."""
        if not self._running:
            self._started_at = time.perf_counter()
        slots = int(getattr(self.pipeline, "num_slots", 1))
        for _ in range(2 * slots + 1):  # a change during the render restarts convergence once
            if self._is_still():
                break
            self._produce_frame_here()
        still = self._is_still()
        if still:
            self._send_still_frame()
        if not self._running:
            if still:
                settled = "the image has settled"
            elif getattr(self.pipeline, "fresh_noise", False):
                settled = "the latest frame (with fresh noise each frame, the image never settles)"
            else:
                settled = "the scene kept changing; this is the latest frame"
            self._show_status(f"rendered: {settled} (press ▶ to follow strokes live)")
        return self.latest_image()

    def inspect_slots(self):
        """The pipeline's inspection of this canvas's last frame, with every canvas layer in canvas order
        (named by its id; a hidden layer has no weight)."""
        with self._lock:
            owner = _pipeline_owner.get(self.pipeline)
            if owner is None or owner() is not self:
                raise RuntimeError("this canvas's pipeline last made a frame for another canvas (or none yet): "
                                   "press Step (canvas.step()), then inspect")
            if self._synced_revision is None:
                raise RuntimeError("the image shown is not the pipeline's last frame (that frame failed, or was dropped "
                                   "when the stream stopped): press Step (canvas.step()), then inspect")
            snapshot = self._state.snapshot()  # the layers and their revision, read together
            if snapshot.revision != self._synced_revision:
                raise RuntimeError("the canvas changed since the last frame: press Step (canvas.step()), then inspect")
            inspection = self.pipeline.inspect_slots()
            engine_index = {layer_id: index for index, (layer_id, _) in enumerate(self._mirror)}
        layers = snapshot.layers
        hidden = np.zeros_like(inspection.fill_weights)
        inspection.layer_weights = np.stack(
            [inspection.layer_weights[:, engine_index[layer["id"]]] if layer["id"] in engine_index else hidden
             for layer in layers], axis=1) if layers else inspection.layer_weights[:, :0]
        inspection.layer_prompts = [layer["prompt"] for layer in layers]
        inspection.layer_ids = [layer["id"] for layer in layers]
        return inspection

    def _produce_frame_here(self) -> None:
        """A frame in the caller's thread (step, render): a failure frees cached GPU memory, as in the stream."""
        try:
            self._produce_frame()
        except Exception:
            self._release_gpu_memory()
            raise

    @property
    def in_flight(self) -> int:
        with self._counters:
            return self._seq - self._acked

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._life:  # stop() ends the thread; start() makes a new one, never two at once
                if not self._running or self._closed:
                    self._thread = None
                    return
            if self.in_flight >= self.max_in_flight:
                if time.perf_counter() - self._last_ack_time > ACK_TIMEOUT_S:
                    self.acknowledge(self._seq)  # nobody is watching any more; don't freeze forever
                else:
                    self._wait(timeout=0.5)
                    continue
            if self._is_still():
                self._send_still_frame()
                self._wait()
                continue
            try:
                self._produce_frame(streaming=True)
                if getattr(self.pipeline, "needs_warm_up", False):
                    self._warm_up()
            except Exception as exc:
                log.error("generation stopped:\n%s", traceback.format_exc())
                self._release_gpu_memory()
                message = f"generation stopped: {type(exc).__name__}: {exc}. {failure_hint(exc)}"
                self.stop(status=message)
                self._canvas.send_threadsafe(*protocol.error_message(message))

    def _wait(self, timeout: float | None = None) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    def _is_still(self) -> bool:
        """Converged and nothing new to show: no UNet calls until the next change. A pipeline shared with
        another canvas that used it last has converged on that canvas's scene, not this one's."""
        owner = _pipeline_owner.get(self.pipeline)
        return (
            self._seed_request is None
            and owner is not None and owner() is self
            and self._state.revision == self._synced_revision
            and bool(getattr(self.pipeline, "converged", False))
        )

    def _warm_up(self) -> None:
        self._show_status("warming up: preparing the model for this number of layers (frames continue after it)",
                          while_running=True)
        started = time.perf_counter()
        with self._lock:
            self.pipeline.warm_up(block=False)  # a compile runs in the background; only graph captures happen here
        log.info("warm-up took %.1f s", time.perf_counter() - started)
        self._show_status(self._generating_status(), while_running=True)

    def _show_status(self, routine: str | None = None, while_running: bool = False, **traits: Any) -> None:
        """Show a routine status (None: the last one again) followed by the standing prompt warnings, so
        "generating" or "still" does not hide a warning while it holds. `while_running`: a status about the
        stream at work, shown only if it still runs when the kernel's loop gets to it (a pause in between wins)."""
        if routine is not None:
            self._routine_status = routine
        line = " — ".join(text for text in (self._routine_status, *self._prompt_warnings.values()) if text)
        self._canvas.set_traits_threadsafe(when=(lambda: self._running) if while_running else None, status=line, **traits)

    def _generating_status(self) -> str:
        error = getattr(self.pipeline, "compile_error", None)
        if error:
            return f"generating without the compiled fast path, which failed: {error}"
        if getattr(self.pipeline, "compiling", False):
            return "generating uncompiled while the model compiles in the background (about a minute the first time)"
        return "generating"

    # ---- one frame ----------------------------------------------------------------------------
    def _produce_frame(self, streaming: bool = False) -> None:
        started = time.perf_counter()
        with self._lock:
            if self._previous_step is not None:  # read the masks as late as possible: after the last step
                self._previous_step.synchronize()
            snapshot = self._state.snapshot()
            self._sync_engine(snapshot)
            apply_updates = getattr(self.pipeline, "apply_updates", None)
            if apply_updates is not None:
                apply_updates()
            synced = time.perf_counter()
            latent = self.pipeline(output_type="latent")
            self._previous_step = device_event(latent)
            frame = HostFrame(self.pipeline.decode(latent, "pt"))
            stage_timer = getattr(self.pipeline, "frame_stages", None)
            stages = stage_timer() if stage_timer is not None else None
            generated = time.perf_counter()
            # Only plain assignments under `_stopping`: stop() may wait for it inside a SIGINT handler, on a
            # kernel thread interrupted while holding any other lock.
            with self._stopping if streaming else contextlib.nullcontext():
                if streaming and not self._running:
                    # Stopped while this frame was made: after stop() returns no frame is recorded (ones recorded
                    # before may still be on their way). The pipeline moved on regardless, so the frame shown is
                    # no longer its latest: never take the scene as settled on it (one more frame will be made).
                    self._synced_revision = None
                    return
                # Still under the lock: a step() beside the stream thread must not record frames out of order.
                self._synced_revision = snapshot.revision
                self._latest_frame = frame
                self.frames_generated += 1
                was_still, self._still_sent = self._still_sent, False
                arrival, self._pending_arrival = self._pending_arrival, None
            breakdown = {"sync": (synced - started) * 1e3, "generate": (generated - synced) * 1e3}
            self._queue_frame(frame, "jpeg", breakdown, started, arrival, stages)
        if was_still:
            self._show_status(self._generating_status(), while_running=True)

    def _send_still_frame(self) -> None:
        if self._latest_frame is None:
            return
        if not self._still_sent:
            self._still_sent = True
            self._queue_frame(self._latest_frame, "png", {}, time.perf_counter(), None)
        # Also when the PNG went out before (a render, then ▶): the status must not stay at "generating".
        self._encoder.submit(self._announce_still)  # after the PNG is out, so "still" means it was sent

    def _queue_frame(self, frame, fmt, breakdown, started, arrival, stages=None) -> None:
        """Number a frame and hand it to the encoder in one step, so frames leave in `seq` order.

        The ordering lock is not the counters lock: an encoder that sends inline (and a sender that
        acknowledges at once) calls `acknowledge` from inside `submit`, which takes the counters lock."""
        with self._queue_order:
            with self._counters:
                if self._seq == self._acked:  # the window was empty: time the ack from now, not from a stale ack
                    self._last_ack_time = time.perf_counter()
                self._seq += 1
                seq = self._seq
            self._encoder.submit(self._encode_and_send, seq, frame, fmt, breakdown, started, arrival, stages)

    def _announce_still(self) -> None:
        if self._still_sent:
            self._show_status("still: the image has settled; paint to continue", while_running=True)

    def _encode_and_send(self, seq, frame, fmt, breakdown, started, arrival, stages=None) -> None:
        repeat = not breakdown  # the settled PNG repeats the last frame: it keeps that frame's figures
        try:
            rgb = frame.array()  # waits for this frame's copy to the host, in this thread only
            if stages is not None:
                breakdown.update(stages.result())
            encode_start = time.perf_counter()
            payload = protocol.encode_image(rgb, fmt, self.jpeg_quality)
            sent_at = time.perf_counter()
            breakdown["encode"] = (sent_at - encode_start) * 1e3
            stats = dict(self._canvas.stats) if repeat else self._update_stats(breakdown, started, sent_at, arrival)
            message = protocol.frame_message(seq, fmt, rgb.shape[1], rgb.shape[0], stats, payload)
            self._latest_message = message
            self._send_frame_message(*message)
        except Exception:  # never let an encoder failure kill the executor silently
            log.exception("could not encode or send frame %s", seq)

    def _send_frame_message(self, content: dict, buffers: list) -> None:
        self._canvas.send_threadsafe(content, buffers)

    def _update_stats(self, breakdown: dict, started: float, sent_at: float, arrival: float | None) -> dict:
        self._frame_times = [t for t in self._frame_times if sent_at - t < 2.0] + [sent_at]
        span = self._frame_times[-1] - self._frame_times[0]
        fps = (len(self._frame_times) - 1) / span if span > 0 else 0.0
        stats = {
            "fps": round(fps, 2),
            "frame_ms": round((sent_at - started) * 1e3, 2),
            "breakdown": {k: round(v, 2) for k, v in breakdown.items()},
            "frames": self.frames_generated,
        }
        previous = self._canvas.stats or {}
        stats["latency_ms"] = round((sent_at - arrival) * 1e3, 2) if arrival is not None else previous.get("latency_ms")
        self._canvas.set_traits_threadsafe(stats=stats)
        return stats

    # ---- canvas state -> engine (only what changed) --------------------------------------------
    def _sync_engine(self, snapshot) -> None:
        pipeline = self.pipeline
        owner = _pipeline_owner.get(pipeline)
        if owner is None or owner() is not self:  # another canvas used it last: push everything
            _pipeline_owner[pipeline] = weakref.ref(self)
            self._mirror = []
            self._background_revision = -1
            self._seed_request = self._seed
            while pipeline.num_layers:
                pipeline.remove_layer(pipeline.num_layers - 1)
        if self._seed_request is not None:
            seed, self._seed_request = self._seed_request, None
            if getattr(pipeline, "seed", None) != seed:
                pipeline.reset_seed(seed)
        if snapshot.background_revision != self._background_revision:
            pipeline.update_background(
                image=False if snapshot.background_image is None else snapshot.background_image,
                prompt=snapshot.background.get("prompt", ""),
                negative_prompt=snapshot.background.get("negative_prompt", ""),
            )
            self._background_revision = snapshot.background_revision
        wanted = [layer for layer in snapshot.layers if layer["visible"]]
        for index, layer in enumerate(wanted):
            # What the engine holds for this layer; the mask stands in as its revision (cheap to compare).
            settings = {
                "prompt": layer["prompt"],
                "negative_prompt": layer["negative_prompt"],
                "mask": snapshot.mask_revisions[layer["id"]],
                "mask_strength": layer["mask_strength"],
                "mask_std": layer["mask_blur"],
                "prompt_strength": layer["prompt_strength"],
            }
            old_id, old_settings = self._mirror[index] if index < len(self._mirror) else (None, {})
            if old_id != layer["id"]:  # another layer (or none) sat at this index: send everything
                old_settings = {}
            changes = {name: value for name, value in settings.items() if old_settings.get(name) != value}
            if not changes:
                continue
            if "prompt" in changes:
                self._check_prompt_length(layer)
            if "mask" in changes:
                # as a fraction: painted coverage is no person's mistake to warn about (an eraser's edge leaves 1s)
                changes["mask"] = np.divide(snapshot.masks[layer["id"]], 255.0, dtype=np.float32)
                self._note_mask_arrival(layer["id"], snapshot.mask_arrival.get(layer["id"]))
            pipeline.update_single_layer(idx=index, **changes)
            if index < len(self._mirror):
                self._mirror[index] = (layer["id"], settings)
            else:
                self._mirror.append((layer["id"], settings))
        while len(self._mirror) > len(wanted):
            pipeline.remove_layer(len(self._mirror) - 1)
            self._mirror.pop()
        shown = {layer["id"] for layer in wanted}
        if not shown.issuperset(self._prompt_warnings):  # a warned-about layer was removed or hidden
            self._prompt_warnings = {key: text for key, text in self._prompt_warnings.items() if key in shown}
            self._show_status()

    def _note_mask_arrival(self, layer_id: str, arrival: float | None) -> None:
        """Keep the oldest stroke the next frame answers (since the start), for the latency figure. A stroke
        counts once: a mask sent again (a layer shown again, reordered) answers no new stroke."""
        if arrival is None or self._counted_arrivals.get(layer_id) == arrival:
            return
        self._counted_arrivals[layer_id] = arrival
        if arrival >= self._started_at and (self._pending_arrival is None or arrival < self._pending_arrival):
            self._pending_arrival = arrival

    def _check_prompt_length(self, layer: dict) -> None:
        """Say in the widget when a prompt is longer than the text encoder reads (the end is dropped);
        the status line keeps saying it until that prompt changes."""
        count = getattr(getattr(self.pipeline, "model", None), "tokens_over_limit", None)
        over = count(layer["prompt"]) if count is not None else 0
        warnings = dict(self._prompt_warnings)
        if over:
            name = layer["name"] or layer["prompt"][:30]
            warnings[layer["id"]] = (
                f"The prompt of layer {name!r} is {over} token(s) longer than the text encoder reads: "
                "its end is ignored. Shorten it to keep every word."
            )
            self._canvas.send_threadsafe(*protocol.error_message(warnings[layer["id"]]))
        elif warnings.pop(layer["id"], None) is None:
            return
        self._prompt_warnings = warnings
        self._show_status()

    def _release_gpu_memory(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            log.exception("could not release cached GPU memory")


# ---- kernel interrupts end the generation threads -------------------------------------------------
_hooks_installed = False


def stop_all_runners(status: str = "stopped: the kernel was interrupted") -> None:
    for runner in list(_live_runners):
        runner.stop(status=status)


def _install_interrupt_hooks() -> None:
    """Make "interrupt the kernel" stop every stream, whether a cell is running or the kernel is idle.

    ipykernel installs Python's default SIGINT handler only while a cell runs and restores the saved
    one (SIG_IGN) afterwards, so the idle-time handler is the saved one: wrap it, and wrap the running
    one at each cell's start.
    """
    global _hooks_installed
    if _hooks_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "saved_sigint_handler"):
        return
    import signal

    def chain(previous):
        def handler(signum, frame):
            stop_all_runners()
            if callable(previous):
                previous(signum, frame)

        return handler

    kernel.saved_sigint_handler = chain(kernel.saved_sigint_handler)
    shell.events.register("pre_execute", lambda: signal.signal(signal.SIGINT, chain(signal.getsignal(signal.SIGINT))))
    _hooks_installed = True
