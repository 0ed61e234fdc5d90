"""Replaying the denoiser from CUDA graphs: the optional fast path of `StreamMultiDiffusion(compile=...)`.

An eager SD 1.5 UNet call is ~1,500 kernel launches; at stream batch sizes the GPU waits on the
launches as much as on the arithmetic. `GraphedPredictor` wraps a family adapter's `predict` and
replays a CUDA graph captured once per input shape. The stream's batch is (slots x active layers),
so the shapes -- the buckets -- are one per active-layer count; all graphs share one memory pool
(they never run at the same time). Until a shape has been captured (`warm_up`), calls run eagerly,
so frames never wait for a capture; the caller decides when to spend the capture time.

Modes: "cudagraph" (capture the eager model: under a second per shape) and "inductor"
(torch.compile's default mode, channels_last weights, inside the graph: fused kernels, but the first
compile takes about a minute per shape). channels_last is left out of "cudagraph": eager GroupNorm on
NHWC tensors is slower, and on an H100 it made the graphed SD 1.5 batch of 20 slower than eager
(70.6 vs 65.4 ms). The arithmetic is the model's own, so frames equal the
eager ones up to floating-point noise (kernel choice differs with memory format and compilation).
"""

from __future__ import annotations

from typing import Any

import torch

COMPILE_MODES = ("cudagraph", "inductor")

Conditioning = dict[str, torch.Tensor]


def compile_mode(value: Any) -> str | None:
    """`compile=` argument -> None (eager), "cudagraph" or "inductor"."""
    if value is False or value is None:
        return None
    if value is True:
        return "cudagraph"
    if value in COMPILE_MODES:
        return value
    raise ValueError(f"compile must be False, True or one of {COMPILE_MODES} (got {value!r})")


def _signature(latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> tuple:
    parts = [(tuple(latents.shape), latents.dtype), (tuple(timesteps.shape), timesteps.dtype)]
    parts += [(name, tuple(v.shape), v.dtype) for name, v in sorted(cond.items())]
    return tuple(parts)


class _Graph:
    """One captured call: static inputs are filled in, the graph replays, the static output is copied out."""

    def __init__(self, predict, signature: tuple, device: torch.device, pool, warmup_calls: int):
        (latent_shape, latent_dtype), (time_shape, time_dtype), *cond_parts = signature
        self.latents = torch.zeros(latent_shape, dtype=latent_dtype, device=device)
        self.timesteps = torch.zeros(time_shape, dtype=time_dtype, device=device)
        self.cond = {name: torch.zeros(shape, dtype=dtype, device=device) for name, shape, dtype in cond_parts}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():  # warm-up (and compilation) outside the capture
            for _ in range(warmup_calls):
                predict(self.latents, self.timesteps, self.cond)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the frame encoder waiting on its copy) may use CUDA meanwhile
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"), torch.no_grad():
            self.output = predict(self.latents, self.timesteps, self.cond)

    def __call__(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.latents.copy_(latents)
        self.timesteps.copy_(timesteps)
        for name, value in cond.items():
            self.cond[name].copy_(value)
        self.graph.replay()
        return self.output.clone()  # the static output is overwritten by the next replay


class GraphedPredictor:
    """`predict` of a family adapter, replayed from CUDA graphs (see the module notes)."""

    def __init__(self, family: Any, mode: str = "cudagraph"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"mode must be one of {COMPILE_MODES} (got {mode!r})")
        self.family = family
        self.mode = mode
        self._graphs: dict[tuple, _Graph] = {}
        self._pending: list[tuple] = []
        self._pool = None
        self._predict = family.predict
        self._prepared = False

    @property
    def enabled(self) -> bool:
        return self.family.device.type == "cuda"

    @property
    def pending(self) -> list[tuple]:
        """Input signatures seen but not captured yet."""
        return list(self._pending)

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if not self.enabled:
            return self.family.predict(latents, timesteps, cond)
        signature = _signature(latents, timesteps, cond)
        graph = self._graphs.get(signature)
        if graph is not None:
            return graph(latents, timesteps, cond)
        if signature not in self._pending:
            self._pending.append(signature)
        return self.family.predict(latents, timesteps, cond)  # eager until captured: never a compile stall here

    def expect(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> None:
        """Note a signature to capture at the next `warm_up` without running the model."""
        signature = _signature(latents, timesteps, cond)
        if self.enabled and signature not in self._graphs and signature not in self._pending:
            self._pending.append(signature)

    def warm_up(self) -> int:
        """Capture a graph for every pending signature; returns how many were captured."""
        if not self.enabled:
            self._pending.clear()
            return 0
        self._prepare()
        done = 0
        while self._pending:
            signature = self._pending.pop(0)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            warmup_calls = 3 if self.mode == "inductor" else 2
            self._graphs[signature] = _Graph(self._predict, signature, self.family.device, self._pool, warmup_calls)
            done += 1
        return done

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._prepared = True
        if self.mode == "inductor":
            unet = getattr(self.family, "unet", None)
            if unet is not None:  # inductor fuses the norms, so NHWC convolutions pay off here
                unet.to(memory_format=torch.channels_last)
            compiled = torch.compile(self.family.predict, mode="default", dynamic=False)
            self._predict = compiled
