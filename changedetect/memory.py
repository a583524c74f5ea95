"""Freed memory given back to the system between a run's stages."""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Give the freed memory glibc keeps in its heaps back to the system (``malloc_trim``;
    elsewhere there is nothing to do).

    Once large arrays have been freed, glibc serves arrays of that size from its heaps instead
    of mapping them on their own (its mmap threshold rises), and keeps what they free there: the
    pass's chunk buffers in the arenas of the threads that computed them (about 0.4 GB after a
    10,000² pass), then the labelling's and each batch of site views' arrays (0.1-0.2 GB each
    with 5 % of a 10,000² grid changed). What the next stage allocates, on other threads or in
    other sizes, does not reuse them, so the run's peak grew stage by stage."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
