"""Bounded waiting for the tests that watch threads, kernels or pages (one helper for every test folder)."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.01, what: str = "condition",
               retry_errors: bool = False):
    """Call `probe` until it returns something truthy; return that. Fail after `timeout` seconds, showing
    the last value the probe gave. With `retry_errors`, an exception other than AssertionError counts as
    "not yet" (a probe racing a page or kernel); otherwise it fails the test at once."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError:
            raise
        except Exception as exc:
            if not retry_errors:
                raise
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
