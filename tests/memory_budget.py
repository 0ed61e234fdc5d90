"""A memory budget for a block of a test: past it, allocations fail (MemoryError) instead of swapping.

It caps the process's address space (RLIMIT_AS) at what it uses now plus the budget, and restores the
cap after the block. Linux only (it reads /proc), like the project's CI.
"""

from __future__ import annotations

import contextlib
import resource

MiB = 1024 * 1024


def address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


@contextlib.contextmanager
def memory_budget(extra_bytes: int):
    """Let the block allocate at most about `extra_bytes` more (address space, so a little less in practice)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = address_space_bytes() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
