"""Computed chunks of the test's input cube kept as files in the run's scratch, so that a chunk
computed by one step (the statistics sample, or a stripe of the pass for its halo) is read back
by the step that needs it next instead of its bands being read and decoded again.

A file is written by a task on whichever worker computed the chunk and read by another task,
maybe on another worker: the folder must be one every worker reads and writes (on one machine,
any folder), as the pass's changed-pixel spill already is.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
    if kept.layers is None:
        return np.load(kept.path, allow_pickle=False)
    # only the cube's layers are read off the disk, and copied out of the map
    whole = np.load(kept.path, mmap_mode="r", allow_pickle=False)
    return np.ascontiguousarray(whole[list(kept.layers)])
