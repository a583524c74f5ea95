"""One chunk of the test's input cube: computed by a task of its own, and kept as a file in the
run's scratch, so that a chunk computed by one step (the statistics sample, or a stripe of the
pass for its halo) is read back by the step that needs it next instead of its bands being read
and decoded again.

A file is written by a task on whichever worker computed the chunk and read by another task,
maybe on another worker: the folder must be one every worker reads and writes (on one machine,
any folder), as the pass's changed-pixel spill already is.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import dask
import numpy as np


class ChunkGraph:
    """A chunk's own part of a lazy array's graph, opaque to dask (which would otherwise
    schedule each of its forty steps as a task of its own): culled once, it spares each task
    that computes a chunk a walk of the whole array's graph."""

    __slots__ = ("graph", "key")

    def __init__(self, graph: dict[Any, Any], key: Any) -> None:
        self.graph, self.key = graph, key


def compute_chunk(chunk: ChunkGraph) -> np.ndarray:
    (block,) = dask.core.get(chunk.graph, [chunk.key])
    return block


@dataclass(frozen=True)
class KeptChunk:
    """A chunk of the input cube in a file: `layers` are the cube's layers among the file's
    (None: the file holds the cube's layers as they are)."""

    path: Path
    layers: tuple[int, ...] | None = None


def save_chunk(path: Path, block: np.ndarray) -> None:
    """Write `block` to `path`, under a passing name first: a reader never finds half a chunk."""
    passing = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    with passing.open("wb") as file:
        np.save(file, block, allow_pickle=False)
    os.replace(passing, path)


def load_chunk(kept: KeptChunk) -> np.ndarray:
    """The chunk `kept` holds, in memory (FileNotFoundError when its file is gone)."""
    if kept.layers is not None:
        # only the cube's layers are read off the disk, and copied out of the map
        return np.ascontiguousarray(map_chunk(kept.path)[list(kept.layers)])
    with open(kept.path, "rb") as file:
        shape, dtype, _ = _npy_header(file)
        return np.fromfile(file, dtype, count=math.prod(shape)).reshape(shape)


def map_chunk(path: Path) -> np.ndarray:
    """The chunk file at `path` mapped read-only: only what is indexed is read off the disk."""
    with open(path, "rb") as file:
        shape, dtype, offset = _npy_header(file)
    return np.memmap(path, dtype, mode="r", offset=offset, shape=shape)


#: numpy parses a .npy header with ast.literal_eval, and CPython 3.11's AST constructor keeps
#: its recursion depth per interpreter, not per thread: two threads parsing at once can fail
#: with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905), which
#: the pass's threads, loading chunks side by side, did. One header at a time, then.
_HEADER_PARSE = threading.Lock()


def _npy_header(file: BinaryIO) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of the .npy file open at its start, as save_chunk
    wrote it (C order)."""
    version = np.lib.format.read_magic(file)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    with _HEADER_PARSE:
        shape, fortran_order, dtype = read(file)
    if fortran_order:
        raise ValueError(f"{file.name}: a chunk file in Fortran order, not written by save_chunk")
    return shape, dtype, file.tell()
