"""Where the pass keeps the changed pixels' values, block by block: in memory, or appended to
files in the run's scratch folder.

With heavy change the values were most of the memory held from the end of the pass to the end of
the run (15 float32 a pixel: 0.3 GB with 5 % of a 10,000² grid changed, twice that while the
blocks' parts were joined), and they are read once, a part at a time, for the patch means: on
disk they cost a write and a read, and memory no longer grows with the amount of change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


class SpilledColumn:
    """A :class:`PixelColumn` in a raw file: each slice is read from the file when asked for, so it
    is held only while it is used."""

    def __init__(self, path: Path, size: int, dtype: np.dtype) -> None:
        self.path, self.size, self.dtype = path, size, np.dtype(dtype)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice, /) -> np.ndarray:
        if not isinstance(part, slice):
            raise TypeError("a spilled column is read by slices (start:stop) only")
        start, stop, step = part.indices(self.size)
        if step != 1:
            raise TypeError("a spilled column is read by slices with step 1 only")
        if stop <= start:
            return np.empty(0, self.dtype)
        count, offset = stop - start, start * self.dtype.itemsize
        return np.fromfile(self.path, self.dtype, count=count, offset=offset)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)


class ValueParts:
    """Keeps blocks of named per-pixel values in memory; :meth:`columns` joins them name by name
    (each name's parts let go as it is joined, so the values are not held twice)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {}

    def append(self, values: Mapping[str, np.ndarray]) -> None:
        for name, v in values.items():
            self._parts.setdefault(name, []).append(v)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(self._parts.pop(name)) for name in list(self._parts)}


class ValueSpill:
    """Appends blocks of named per-pixel values to one raw file per name in `folder` (created
    if need be; the files are the caller's to remove, with the run's scratch). Each append opens
    and closes the files, so none is left open whatever happens between appends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.size = 0
        self._dtypes: dict[str, np.dtype] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.raw"

    def append(self, values: Mapping[str, np.ndarray]) -> None:
        """Append one block's values: the same names every time, as many pixels each."""
        sizes = {len(v) for v in values.values()}
        if len(sizes) > 1:
            raise ValueError(f"a block's values differ in length: {sorted(sizes)}")
        if not self._dtypes:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._dtypes = {name: v.dtype for name, v in values.items()}
            for name in values:
                self.path(name).write_bytes(b"")
        if set(values) != set(self._dtypes):
            raise ValueError(f"a block's values are {sorted(values)}, not {sorted(self._dtypes)}")
        for name, v in values.items():
            if v.dtype != self._dtypes[name]:
                raise ValueError(f"{name}: a block of {v.dtype} after {self._dtypes[name]}")
            with self.path(name).open("ab") as file:
                file.write(np.ascontiguousarray(v).data)
        self.size += sizes.pop() if sizes else 0

    def columns(self) -> dict[str, SpilledColumn]:
        """Every name's values appended so far, read from the files."""
        return {
            name: SpilledColumn(self.path(name), self.size, dtype)
            for name, dtype in self._dtypes.items()
        }
