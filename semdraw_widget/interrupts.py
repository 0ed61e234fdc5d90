"""Interrupting the kernel stops every canvas's stream, whether a cell is running or the kernel is idle.

The stream runs in threads of its own, which a KeyboardInterrupt in the kernel's main thread never
reaches: the SIGINT handler itself stops the streams. See docs/architecture.md, "Threads".
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol


class Stoppable(Protocol):
    def stop(self, status: str = "paused") -> None: ...


_live: "weakref.WeakSet[Stoppable]" = weakref.WeakSet()
_hooks_installed = False


def track(runner: Stoppable) -> None:
    """Stop `runner` when the kernel is interrupted (until `forget`; a collected runner is forgotten too)."""
    _live.add(runner)


def forget(runner: Stoppable) -> None:
    _live.discard(runner)


def stop_all_runners(status: str = "stopped: the kernel was interrupted") -> None:
    for runner in list(_live):
        runner.stop(status=status)


def install_interrupt_hooks() -> None:
    """Make "interrupt the kernel" call `stop_all_runners`; once per process, from the main thread of an
    IPython kernel (elsewhere there is nothing to hook, and nothing happens).

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
