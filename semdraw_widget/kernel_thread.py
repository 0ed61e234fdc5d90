"""Work from the canvas's other threads, done on the kernel's thread.

Frames, statuses and the end of a stroke's hold happen on threads of their own (the stream, the encoder,
timers). Inside a kernel, what they send must leave from the kernel's thread: Colab (and some other front
ends) show no message sent from another thread. `KernelThread` remembers the kernel's event loop when the
canvas is made and schedules such work on it. Outside a kernel (scripts, tests, benchmarks) there is no
loop to hand work to, and it runs at once in the calling thread. See docs/architecture.md, "Threads".
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable


def kernel_event_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running an IPython kernel's cells, when called from one; None elsewhere (scripts,
    tests, or an unrelated loop such as Playwright's, which would never deliver our sends)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class KernelThread:
    """The kernel's thread as seen by one canvas: the thread that made it, with the loop it ran on (if any)."""

    def __init__(self) -> None:
        self.loop = kernel_event_loop()
        self._ident = threading.get_ident()

    def is_here(self) -> bool:
        """Whether work may run in the calling thread: it is the kernel's, or no kernel loop runs to take it."""
        loop = self.loop
        return loop is None or threading.get_ident() == self._ident or loop.is_closed() or not loop.is_running()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """`fn(*args)` on the kernel's thread: now if called there (or outside a kernel), else soon, on its loop."""
        if self.is_here():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> None:
        """`fn()` after `delay` seconds: on the kernel's loop while it runs, on a timer thread otherwise."""
        loop = self.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.call_later, delay, fn)
        else:
            timer = threading.Timer(delay, fn)
            timer.daemon = True
            timer.start()
