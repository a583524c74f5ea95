"""How the compiled kernels are compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])


def ngjit(function: F) -> F:
    """nopython, and without the GIL so that dask's threads overlap (xarray-spatial's `ngjit`);
    compiled once per machine and then loaded from numba's cache, or compiled in each process
    where no cache directory is writable (a read-only container)."""
    try:
        return numba.jit(nopython=True, nogil=True, cache=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.jit(nopython=True, nogil=True)(function)
