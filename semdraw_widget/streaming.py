"""The kernel-side generation loop: canvas state -> engine -> frames -> the browser.

One `StreamRunner` (and at most one stream thread) per canvas. Each frame, the thread takes a consistent
snapshot of the canvas state, lets the `EngineMirror` (engine_mirror.py) push only what changed into the
engine, steps the engine once, and hands the frame to the `FrameSender` (frame_sender.py), which encodes
it on a thread of its own and sends it while the next frame is made. The sender's window of
unacknowledged frames decides when the next frame may start. Once the engine reports `converged` (a still
scene, fixed noise), the last frame is resent as a lossless PNG and the thread sleeps until the next
change: a still scene costs nothing.

The frame path never waits on the GPU: the frame is decoded to uint8 on the device and copied into
pinned host memory without blocking (`HostFrame`); the encoder thread waits for that copy, so
decoding, the copy and JPEG encoding overlap the next frame's work. To keep stroke-to-frame latency
low, the next frame is queued only once the previous frame's denoising step has finished (its decode
may still run), so the GPU never holds a backlog of frames made from stale masks. With
`compile=...` pipelines, new batch sizes get their CUDA graphs from this thread between frames, and
`compile="inductor"` compiles in a background thread while frames go on uncompiled; the canvas
status says so.

The pipeline is reached only through `StreamingPipeline`, the members the runner and the mirror use.
Threads, locks and how a stop works: docs/architecture.md, "Threads".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
import weakref
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import interrupts, protocol
from .engine import cpu_threads
from .engine.stream import HostFrame, device_event
from .engine_mirror import EngineMirror
from .frame_sender import FrameSender, FrameTiming

log = logging.getLogger("semdraw_widget")

_pipeline_locks: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()
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



class PromptModel(Protocol):
    vocabulary: Any  # None, or the closed vocabulary of a model that knows only some words (`.note(prompt)`)

    def tokens_over_limit(self, text: str) -> int:
        """How many of `text`'s tokens the text encoder cannot read (0: the prompt fits)."""


@runtime_checkable
class StreamingPipeline(Protocol):
    """What a canvas needs of its pipeline, and all it uses (`StreamMultiDiffusion` is the one there is).

    The engine layers are indexed bottom to top; `update_single_layer(idx=num_layers, ...)` adds one."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def num_slots(self) -> int:
        """Denoising slots: a change has settled after this many frames."""
    @property
    def num_layers(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def fresh_noise(self) -> bool:
        """New noise every frame: the image never settles."""
    @property
    def converged(self) -> bool:
        """The scene has settled: the next frame would repeat the last one."""
    @property
    def needs_warm_up(self) -> bool:
        """`warm_up` has work to do for the current batch (compiled pipelines)."""
    @property
    def compiling(self) -> bool:
        """A background compile is running; frames go on uncompiled."""
    @property
    def compile_error(self) -> str | None: ...
    @property
    def model(self) -> PromptModel: ...
    region_mode: str  # "exact" or "attention" (settable: the next frames are made the other way)

    def update_background(self, image: Any = None, prompt: str | None = None,
                          negative_prompt: str | None = None) -> None: ...
    def update_single_layer(self, idx: int, **settings: Any) -> None: ...
    def remove_layer(self, idx: int) -> None: ...
    def reset_seed(self, seed: int | None = None) -> None: ...
    def apply_updates(self) -> None:
        """Do an update's host-side work now, so that the frame call only queues device work."""
    def __call__(self, output_type: str = "pil") -> Any:
        """Step every slot once; `output_type="latent"` returns the newest clean latent."""
    def decode(self, latent: Any, output_type: str = "pil") -> Any:
        """`output_type="pt"`: the latent as uint8 RGB on the device, for `HostFrame`."""
    def frame_stages(self) -> Any:
        """The last frame's stage timings, read later with `.result()`, or None (only when profiling)."""
    def warm_up(self, block: bool = True) -> int: ...
    def inspect_slots(self) -> Any: ...


def check_pipeline(pipeline: Any, width: int, height: int) -> None:
    """A canvas needs a streaming pipeline of its own size."""
    if not isinstance(pipeline, StreamingPipeline):
        raise TypeError(
            f"a canvas needs a streaming pipeline, not a {type(pipeline).__name__}: pass "
            "pipeline=StreamMultiDiffusion(device, hf_key=..., width=..., height=...) (or model=...). "
            "StableMultiDiffusionPipeline makes single images: call it directly, outside the canvas."
        )
    for name, size, theirs in (("width", width, pipeline.width), ("height", height, pipeline.height)):
        if theirs != size:
            raise ValueError(
                f"the pipeline's {name} ({theirs}) differs from the canvas's ({size}); "
                "create both with the same size"
            )


class StreamRunner:
    """Drives one canvas's frames from its pipeline: the stream thread, Step and Render, the status line."""

    def __init__(self, pipeline: StreamingPipeline, canvas: Any, max_in_flight: int = 2, jpeg_quality: int = 85):
        # the canvas checked both (`attach_pipeline`, its constructor) before it closed the runner it had
        self.pipeline = pipeline
        self._canvas = canvas
        self._state = canvas.state
        self._lock = _lock_for(pipeline)  # the pipeline and `mirror`: one frame at a time per pipeline
        self.mirror = EngineMirror(pipeline, canvas.seed, canvas.region_mode, on_warnings=self._on_prompt_warning)
        self.sender = FrameSender(canvas.send_threadsafe, max_in_flight, jpeg_quality)
        self._wake = threading.Event()  # something changed: a stroke, an ack, a seed, start or stop
        self._thread: threading.Thread | None = None  # alive exactly while running (see _loop)
        self._life = threading.Lock()  # guards `_thread`: start() and the thread's end never race
        # Held while the flag drops and while a streamed frame is recorded, so a frame is either recorded
        # before stop() returns or dropped. Re-entrant: stop() also runs from a SIGINT handler on the kernel's
        # thread, possibly while that thread is inside stop() already.
        self._stopping = threading.RLock()
        self._running = False
        self._closed = False
        self._latest_frame: HostFrame | None = None
        self._previous_step: Any = None  # device event: the last frame's denoising step is done
        self._still_sent = False
        self._synced_revision: int | None = None  # the state revision of the latest frame recorded
        self._routine_status = ""
        self.frames_generated = 0
        self._state.add_change_listener(self._wake.set)
        interrupts.track(self)

    # ---- control ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("this canvas was closed; create a new one")
        interrupts.install_interrupt_hooks()
        cpu_threads.release_idle_workers()  # this thread's idle OpenMP workers would slow the stream's (see there)
        self._show_status(self._generating_status(), running=True)
        self.mirror.count_strokes_from(time.perf_counter())  # strokes from before the start are no latency
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
        self.sender.close()
        self._state.remove_change_listener(self._wake.set)
        interrupts.forget(self)

    def acknowledge(self, seq: int) -> None:
        self.sender.acknowledge(seq)
        self._wake.set()

    def request_seed(self, seed: int) -> None:
        self.mirror.request_seed(seed)
        self._wake.set()

    def request_region_mode(self, mode: str) -> None:
        self.mirror.request_region_mode(mode)
        self._wake.set()

    def resend_latest(self) -> None:
        """A new view: forget frames the old one never acknowledged and show it the latest frame."""
        self.sender.resend_latest()
        self._wake.set()

    def latest_image(self):
        from PIL import Image

        return None if self._latest_frame is None else Image.fromarray(self._latest_frame.array(), "RGB")

    def step(self):
        """One frame now, in the caller's thread; returns it as a PIL image."""
        if not self._running:
            self.mirror.count_strokes_from(time.perf_counter())  # a manual step has no stroke-to-frame latency
        self._produce_frame_here()
        return self.latest_image()

    def render(self):
        """Frames until the scene settles, in the caller's thread; the settled image is sent as a PNG
        and returned (see `SemanticCanvas.render`)."""
        if not self._running:
            self.mirror.count_strokes_from(time.perf_counter())
        for _ in range(2 * self.pipeline.num_slots + 1):  # a change during the render restarts convergence once
            if self._is_still():
                break
            self._produce_frame_here()
        still = self._is_still()
        if still:
            self._send_still_frame()
        if not self._running:
            if still:
                settled = "the image has settled"
            elif self.pipeline.fresh_noise:
                settled = "the latest frame (with fresh noise each frame, the image never settles)"
            else:
                settled = "the scene kept changing; this is the latest frame"
            self._show_status(f"rendered: {settled} (press ▶ to follow strokes live)")
        return self.latest_image()

    def inspect_slots(self):
        """The pipeline's inspection of this canvas's last frame, with every canvas layer in canvas order
        (named by its id; a hidden layer has no weight)."""
        with self._lock:
            if not self.mirror.owns_engine:
                raise RuntimeError("this canvas's pipeline last made a frame for another canvas (or none yet): "
                                   "press Step (canvas.step()), then inspect")
            if self._synced_revision is None:
                raise RuntimeError("the image shown is not the pipeline's last frame (that frame failed, or was dropped "
                                   "when the stream stopped): press Step (canvas.step()), then inspect")
            snapshot = self._state.snapshot()  # the layers and their revision, read together
            if snapshot.revision != self._synced_revision:
                raise RuntimeError("the canvas changed since the last frame: press Step (canvas.step()), then inspect")
            inspection = self.pipeline.inspect_slots()
            engine_index = self.mirror.engine_index()
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

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._life:  # stop() ends the thread; start() makes a new one, never two at once
                if not self._running or self._closed:
                    self._thread = None
                    return
            if not self.sender.may_send():
                self._wait(timeout=0.5)  # an acknowledgement wakes it
                continue
            if self._is_still():
                self._send_still_frame()
                self._wait()
                continue
            try:
                self._produce_frame(streaming=True)
                if self.pipeline.needs_warm_up:
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
        return (
            not self.mirror.seed_pending
            and not self.mirror.region_mode_pending
            and self.mirror.owns_engine
            and self._state.revision == self._synced_revision
            and self.pipeline.converged
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
        line = " — ".join(text for text in (self._routine_status, *self.mirror.prompt_warnings) if text)
        self._canvas.set_traits_threadsafe(when=(lambda: self._running) if while_running else None, status=line, **traits)

    def _on_prompt_warning(self, new_warning: str | None) -> None:
        """The mirror's prompt warnings changed: a new one also goes to the view as an error message."""
        if new_warning is not None:
            self._canvas.send_threadsafe(*protocol.error_message(new_warning))
        self._show_status()

    def _generating_status(self) -> str:
        error = self.pipeline.compile_error
        if error:
            return f"generating without the compiled fast path, which failed: {error}"
        if self.pipeline.compiling:
            return "generating uncompiled while the model compiles in the background (about a minute the first time)"
        return "generating"

    # ---- one frame ----------------------------------------------------------------------------
    def _produce_frame(self, streaming: bool = False) -> None:
        started = time.perf_counter()
        with self._lock:
            if self._previous_step is not None:  # read the masks as late as possible: after the last step
                self._previous_step.synchronize()
            snapshot = self._state.snapshot()
            self.mirror.sync(snapshot)
            self.pipeline.apply_updates()
            synced = time.perf_counter()
            latent = self.pipeline(output_type="latent")
            self._previous_step = device_event(latent)
            frame = HostFrame(self.pipeline.decode(latent, "pt"))
            stages = self.pipeline.frame_stages()
            generated = time.perf_counter()
            region_mode = self.pipeline.region_mode  # what this frame was made with
            # Only plain assignments under `_stopping` (`take_stroke_arrival` is one): stop() may wait for it
            # inside a SIGINT handler, on a kernel thread interrupted while holding any other lock.
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
                arrival = self.mirror.take_stroke_arrival()
            breakdown = {"sync": (synced - started) * 1e3, "generate": (generated - synced) * 1e3}
            self.sender.send_frame(frame, FrameTiming(started, breakdown, arrival, self.frames_generated, stages, region_mode))
        if was_still:
            self._show_status(self._generating_status(), while_running=True)

    def _send_still_frame(self) -> None:
        if self._latest_frame is None:
            return
        if not self._still_sent:
            self._still_sent = True
            self.sender.send_still(self._latest_frame)
        # Also when the PNG went out before (a render, then ▶): the status must not stay at "generating".
        self.sender.after_sent(self._announce_still)  # after the PNG is out, so "still" means it was sent

    def _announce_still(self) -> None:
        if self._still_sent:
            self._show_status("still: the image has settled; paint to continue", while_running=True)

    def _release_gpu_memory(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            log.exception("could not release cached GPU memory")
