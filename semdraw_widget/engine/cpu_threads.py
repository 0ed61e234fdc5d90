"""Torch's CPU threads when frames are made on a thread other than the one that loaded the model.

PyTorch's Linux wheels run their CPU ops on GNU OpenMP (libgomp). Every thread that runs a parallel op
keeps a pool of worker threads, and libgomp counts the workers of all pools: once they outnumber the
CPUs, each worker waits at an op's end by sleeping instead of spinning, and every op of a frame pays a
wake-up. The canvas hits exactly that: the kernel's thread gets a pool when it loads the model, and the
stream thread runs the frames with a pool of its own. On this project's 2-core machine the demo model's
UNet took 1.8x as long in the stream's frames while the kernel thread's idle workers existed (benchmarks/
RESULTS.md, the demo model's "CPU threads").

`release_idle_workers()`, called on the kernel's thread before the stream runs, frees that thread's pool
(OpenMP 5's `omp_pause_resource_all`); torch makes a new one the next time that thread runs parallel
work, so nothing is lost but the speed-up until the next release.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: free the threads, keep the settings


@functools.lru_cache(maxsize=1)
def _loaded_libgomp() -> ctypes.CDLL | None:
    """The GNU OpenMP library torch runs with, if any (Linux only: read from the process's maps). Other wheels
    (scikit-learn, xgboost) may load copies of their own; torch's is the one inside its package (torch/lib,
    torch.libs), or the only one loaded (a torch built against the system's)."""
    if not sys.platform.startswith("linux"):
        return None
    import torch

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split(maxsplit=5)[-1].strip() for line in maps if "libgomp" in line})
    except OSError:
        return None
    paths = [path for path in paths if os.path.basename(path).startswith("libgomp") and os.path.exists(path)]
    package = os.path.dirname(torch.__file__)
    torch_own = [path for path in paths if path.startswith((package + os.sep, package + ".libs" + os.sep))]
    for path in torch_own or (paths if len(paths) == 1 else []):
        try:
            library = ctypes.CDLL(path)  # already loaded: the same library, not a second copy
        except OSError:
            continue
        if hasattr(library, "omp_pause_resource_all"):
            library.omp_pause_resource_all.argtypes = [ctypes.c_int]
            library.omp_pause_resource_all.restype = ctypes.c_int
            return library
    return None


def release_idle_workers() -> bool:
    """Free the calling thread's idle OpenMP workers, so that another thread's torch work has the CPUs' full
    speed; True if they were freed. Does nothing (False) without torch's GNU OpenMP, or inside a parallel region."""
    library = _loaded_libgomp()
    return library is not None and library.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0
