"""The optional fast path of `StreamMultiDiffusion(compile=...)`: torch.compile and CUDA-graph replay.

An eager SD 1.5 UNet call is ~1,500 kernel launches; at stream batch sizes the GPU waits on the
launches as much as on the arithmetic. `AcceleratedPredictor` wraps a family adapter's `predict`:

- "cudagraph" (`compile=True`): on CUDA, replay a graph captured once per input shape (under a second
  per shape). The stream's batch is (slots x active layers), so the shapes -- the buckets -- are one
  per active-layer count; all graphs share one memory pool (they never run at the same time).
- "inductor": `torch.compile` (default mode, channels_last weights) and, on CUDA, graphs of the
  compiled model. The first compile takes about a minute on a GPU (less once inductor's on-disk
  cache is warm), so it can run in a background thread while frames go on uncompiled. The batch
  dimension is compiled as dynamic: one compile serves every layer count, and a new count only needs
  its graph captured. On a CPU (no graphs) the compiled model is used directly.

Nothing here stalls a frame: until a shape has its fast path (`warm_up`), calls run eagerly. A
failed compile or graph capture is logged and leaves the predictor running without it
(`compile_error`, `capture_error`).
channels_last is left out of "cudagraph": eager GroupNorm on NHWC tensors is slower, and on an H100
it made the graphed SD 1.5 batch of 20 slower than eager (70.6 vs 65.4 ms). The arithmetic is the
model's own, so outputs equal the eager ones up to floating-point noise (kernel choice differs).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("cudagraph", "inductor")

Conditioning = dict[str, torch.Tensor]
Signature = tuple


def compile_mode(value: Any) -> str | None:
    """`compile=` argument -> None (eager), "cudagraph" or "inductor"."""
    if value is False or value is None:
        return None
    if value is True:
        return "cudagraph"
    if value in COMPILE_MODES:
        return value
    raise ValueError(f"compile must be False, True or one of {COMPILE_MODES} (got {value!r})")


def _signature(latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> Signature:
    parts = [(tuple(latents.shape), latents.dtype), (tuple(timesteps.shape), timesteps.dtype)]
    parts += [(name, tuple(v.shape), v.dtype) for name, v in sorted(cond.items())]
    return tuple(parts)


def _shape_kind(signature: Signature) -> Signature:
    """The signature with its batch size left out: what one dynamic-batch compile covers.

    Batch 1 stays apart: torch.compile specialises sizes 0 and 1, so it would compile anew."""
    (latent_shape, latent_dtype), (time_shape, time_dtype), *cond_parts = signature
    single = latent_shape[0] == 1
    return (single, (latent_shape[1:], latent_dtype), (time_shape[1:], time_dtype),
            *((name, shape[1:], dtype) for name, shape, dtype in cond_parts))


def _zero_inputs(signature: Signature, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Conditioning]:
    (latent_shape, latent_dtype), (time_shape, time_dtype), *cond_parts = signature
    latents = torch.zeros(latent_shape, dtype=latent_dtype, device=device)
    timesteps = torch.zeros(time_shape, dtype=time_dtype, device=device)
    cond = {name: torch.zeros(shape, dtype=dtype, device=device) for name, shape, dtype in cond_parts}
    return latents, timesteps, cond


class _Graph:
    """One captured call: static inputs are filled in, the graph replays, the static output is copied out."""

    def __init__(self, predict: Callable, signature: Signature, device: torch.device, pool, warmup_calls: int = 2):
        self.latents, self.timesteps, self.cond = _zero_inputs(signature, device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():  # lazy initialisation (cuDNN plans, allocations) outside the capture
            for _ in range(warmup_calls):
                predict(self.latents, self.timesteps, self.cond)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the frame encoder waiting on its copy, a background compile) may use CUDA meanwhile
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"), torch.no_grad():
            self.output = predict(self.latents, self.timesteps, self.cond)

    def __call__(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.latents.copy_(latents)
        self.timesteps.copy_(timesteps)
        for name, value in cond.items():
            self.cond[name].copy_(value)
        self.graph.replay()
        return self.output.clone()  # the static output is overwritten by the next replay


_MODULE_CALL = torch.nn.Module.__call__  # what torch.fx's tracer replaces while it traces
_EAGER_TRIES = 3  # calls of an eager model beside a compile, before its failure counts


def _wait_for_fx_trace_to_end(timeout: float = 5.0) -> None:
    """Until no torch.fx trace has `nn.Module.__call__` replaced (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while torch.nn.Module.__call__ is not _MODULE_CALL and time.monotonic() < deadline:
        time.sleep(0.002)


class AcceleratedPredictor:
    """`predict` of a family adapter, compiled and/or replayed from CUDA graphs (see the module notes)."""

    def __init__(self, family: Any, mode: str = "cudagraph"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"mode must be one of {COMPILE_MODES} (got {mode!r})")
        self.family = family
        self.mode = mode
        self.uses_graphs = family.device.type == "cuda"
        self.compile_error: str | None = None  # why torch.compile was given up, if it was
        self.capture_error: str | None = None  # why CUDA graphs were given up, if they were
        self.calls = {"graph": 0, "compiled": 0, "eager": 0}  # which path served each call
        self._graphs: dict[Signature, _Graph] = {}
        self._pending: list[Signature] = []
        self._pool = None
        self._compiled: Callable | None = None
        self._compiled_kinds: set[Signature] = set()
        self._compile_thread: threading.Thread | None = None
        self._layout_to_restore = False  # a failed compile left channels_last weights behind

    # ---- state ------------------------------------------------------------------------------
    @property
    def compiles(self) -> bool:
        """True while torch.compile is part of the plan (inductor mode, and no compile has failed)."""
        return self.mode == "inductor" and self.compile_error is None

    @property
    def compiling(self) -> bool:
        """True while a background compile runs."""
        return self._compile_thread is not None and self._compile_thread.is_alive()

    @property
    def pending(self) -> list[Signature]:
        """Input signatures met that have no fast path yet."""
        return list(self._pending)

    @property
    def captured(self) -> int:
        return len(self._graphs)

    @property
    def needs_warm_up(self) -> bool:
        """True when `warm_up` has something to do now, not merely wait for the running compile (which
        blocks every other compile and every use of the compiled model until it ends)."""
        if self.compiling:
            return False
        return bool(self._pending) or self._layout_to_restore

    def _compiled_for(self, signature: Signature) -> bool:
        """The compiled model takes this signature without compiling, and may be called now: never while
        a compile runs in the background (torch.compile is not thread-safe)."""
        return self.compiles and not self.compiling and _shape_kind(signature) in self._compiled_kinds

    def _done(self, signature: Signature) -> bool:
        if self.uses_graphs:
            return signature in self._graphs
        return not self.compiles or self._compiled_for(signature)

    # ---- calls ------------------------------------------------------------------------------
    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        signature = _signature(latents, timesteps, cond)
        graph = self._graphs.get(signature)
        if graph is not None:
            self.calls["graph"] += 1
            return graph(latents, timesteps, cond)
        self._note(signature)
        if self._compiled_for(signature):  # compiled for this kind already: no compile can happen here
            self.calls["compiled"] += 1
            return self._compiled(latents, timesteps, cond)
        self.calls["eager"] += 1
        if self.compiling:
            return self._eager_beside_compile(latents, timesteps, cond)
        return self.family.predict(latents, timesteps, cond)

    def _eager_beside_compile(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """An eager call while a compile runs in another thread.

        While torch.fx's symbolic tracer traces, it replaces `nn.Module.__call__` for every thread, and inductor
        traces a small module of its own during a compile (once per process). A model call made in that moment
        fails ("module is not installed as a submodule") through no fault of its inputs; it is made again once
        the trace is over. A call that fails every time is a real failure and raises."""
        for _ in range(_EAGER_TRIES - 1):
            try:
                return self.family.predict(latents, timesteps, cond)
            except Exception:
                _wait_for_fx_trace_to_end()
        return self.family.predict(latents, timesteps, cond)

    def expect(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> None:
        """Note a signature to prepare at the next `warm_up` without running the model."""
        self._note(_signature(latents, timesteps, cond))

    def _note(self, signature: Signature) -> None:
        if not self._done(signature) and signature not in self._pending:
            self._pending.append(signature)

    # ---- warm-up ----------------------------------------------------------------------------
    def warm_up(self, block: bool = True) -> int:
        """Give every pending signature its fast path; returns how many got one.

        Compiling (inductor) happens in this thread with `block=True`, else in a background thread
        that this call starts and does not wait for; signatures whose compile is still running stay
        pending. Graph captures (under a second each) and changes to the weights' memory layout
        always happen in this thread, which must be the one that runs the frames (or hold their lock,
        as the widget's stream does)."""
        if block and self._compile_thread is not None:
            self._compile_thread.join()  # its kinds are compiled now (or compiling failed)
        if self.compiling:
            return 0
        missing = self._uncompiled_examples()
        if missing:
            try:
                self._prepare_compile()
            except Exception as exc:
                self._compile_failed(exc)
                missing = []
        if missing and block:
            self._compile(missing)
            missing = []
        self._restore_layout_after_failure()  # before any capture: graphs must not hold weights about to change
        done = self._capture_ready()
        if missing:  # after the captures above: no compile may run beside them
            self._compile_thread = threading.Thread(target=self._compile, args=(missing,), name="semdraw-compile", daemon=True)
            self._compile_thread.start()
        return done

    def _capture_ready(self) -> int:
        """Graphs for the pending signatures that need no compile first; returns how many are done."""
        done = 0
        for signature in list(self._pending):
            if self.compiles and not self._compiled_for(signature):
                continue  # its compile is still to come
            if self.uses_graphs:
                predict = self._compiled if self._compiled_for(signature) else self.family.predict
                try:
                    if self._pool is None:
                        self._pool = torch.cuda.graph_pool_handle()
                    self._graphs[signature] = _Graph(predict, signature, self.family.device, self._pool)
                except Exception as exc:  # e.g. an op that cannot be captured: run without graphs, say why once
                    log.warning("CUDA graph capture failed; running without graphs", exc_info=True)
                    self.uses_graphs = False
                    self.capture_error = f"{type(exc).__name__}: {exc}".strip()[:300]
                    self._pending = [s for s in self._pending if not self._done(s)]
                    return done
            self._pending.remove(signature)
            done += 1
        return done

    def _prepare_compile(self) -> None:
        if self._compiled is not None:
            return
        unet = getattr(self.family, "unet", None)
        if unet is not None and self.uses_graphs and not self._graphs:
            # inductor fuses the norms, so NHWC convolutions pay off on a GPU; changed here, on the frames'
            # thread and before any graph holds the old weights
            unet.to(memory_format=torch.channels_last)
        self._compiled = torch.compile(self.family.predict, mode="default")

    def _restore_layout_after_failure(self) -> None:
        """After a failed compile: back to the layout eager calls are fastest with, unless graphs captured
        since hold the current weights (changing the layout would free the memory they read)."""
        if not self._layout_to_restore:
            return
        self._layout_to_restore = False
        unet = getattr(self.family, "unet", None)
        if unet is not None and not self._graphs:
            unet.to(memory_format=torch.contiguous_format)

    def _uncompiled_examples(self) -> list[Signature]:
        """One pending signature per shape kind that still needs compiling."""
        if not self.compiles:
            return []
        examples: dict[Signature, Signature] = {}
        for signature in self._pending:
            kind = _shape_kind(signature)
            if kind not in self._compiled_kinds:
                examples.setdefault(kind, signature)
        return list(examples.values())

    def _compile(self, signatures: list[Signature]) -> None:
        """Compile the model for each signature's kind (dynamic batch); a failure turns compiling off."""
        try:
            for signature in signatures:
                self._compile_kind(signature)
                self._compiled_kinds.add(_shape_kind(signature))
        except BaseException as exc:  # anything: a kind left neither compiled nor failed would be retried every frame
            self._compile_failed(exc)

    def _compile_failed(self, exc: BaseException) -> None:
        """The model still runs without torch.compile; say why once."""
        log.warning("torch.compile failed; running without it", exc_info=exc)
        self._layout_to_restore = self.uses_graphs
        self.compile_error = f"{type(exc).__name__}: {exc}".strip()[:300]

    def _compile_kind(self, signature: Signature) -> None:
        device = self.family.device
        side = torch.cuda.Stream(device) if device.type == "cuda" else None  # off the frames' stream
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(device))  # after the layout change queued before it
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext(), torch.no_grad():
            latents, timesteps, cond = _zero_inputs(signature, device)
            # An eager call first: a cache the model fills on first use would otherwise be traced empty,
            # and the next call would compile again.
            self.family.predict(latents, timesteps, cond)
            if latents.shape[0] > 1:  # one compile for every layer count: only the batch size differs between them
                for tensor in (latents, timesteps, *cond.values()):
                    torch._dynamo.mark_dynamic(tensor, 0)
            self._compiled(latents, timesteps, cond)
        if side is not None:
            side.synchronize()

