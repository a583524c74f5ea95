"""The one pass over the imagery: test every chunk and hand each finished block to a writer.

Each chunk of the composites is computed once, as one task running the chunk's own part of the
lazy graph (its bands decoded, then masked and composited by one call: some forty small steps,
not forty scheduled tasks), and kept while the chunks around it are tested; its test needs a halo of its
neighbours, which are kept as strips once tested themselves. A chunk's test returns its score
and preview blocks, which the caller's writer puts where it wants them, with the (small) set of
its changed pixels and their features, which the pass gathers.

The pass works in stripes of columns, so that memory does not grow with the AOI's width; the
column of chunks just right of a stripe is computed for that stripe's halo, written to a scratch
folder as it is, and read back from there by the next stripe, whose first column it is; the
chunks the statistics sample computed are read from the files it wrote. So a chunk's bands are
read and decoded once in a run, and a stripe holds no more than a row of its chunks.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.optimization import cull

from ..algorithms.detect import ChangeInputs, ChangeTest, brightening, split_inputs
from ..algorithms.detect.features import kept_values
from ..algorithms.patches import PixelColumn
from ..algorithms.tiles import TilePart, tiles_of
from ..memory import release_freed_memory
from ..progress import report
from .chunks import ChunkGraph, KeptChunk, compute_chunk, load_chunk, save_chunk
from .pixel_values import ValueParts, ValueSpill

#: Red, green, blue rows of the (band, y, x) analysis cube.

#: Chunks tested per dask call: the two cores' worth of work at a time.
STEP_CHUNKS = 2
#: What a row of the composites' chunks may hold (bytes): the pass works in stripes of columns
#: this wide, so memory does not grow with the AOI's width. The first column of chunks of a
#: stripe is computed by the stripe before, for its halo, and handed over through a file.
STRIPE_BYTES = 160 * 2**20


@dataclass
class Gathered:
    """The changed pixels (raveled positions on the grid) with their :func:`kept_values`: in
    memory, or read from the files the pass spilled them to, a slice at a time."""

    flat_index: np.ndarray
    values: Mapping[str, PixelColumn]
    n_valid: int
    n_pixels: int


@dataclass
class Block:
    """What one chunk's test hands back: its place, its score and preview, its changed pixels
    (raveled positions on the grid) and their :func:`kept_values`."""

    row0: int
    col0: int
    score: np.ndarray
    preview: np.ndarray
    flat_index: np.ndarray
    values: dict[str, np.ndarray]
    n_valid: int


#: Receives each finished block, in the order the pass finishes them (row by row of a stripe).
BlockWriter = Callable[[Block], None]
#: Turns the before and after reflectance of a block, each (band, y, x), into its preview.
Preview = Callable[[np.ndarray, np.ndarray], np.ndarray]


#: Where each of the 3 x 3 pieces of a chunk and its halo (:data:`TilePart`) comes from: the position of its array among
#: the task's arrays and the part of it, or None beyond the grid's edges.
PieceLayout = tuple[int, tuple[slice, slice]] | None


def _finish_block(
    test: ChangeTest,
    origin: tuple[int, int],
    width: int,
    min_valid: int,
    preview: Preview,
    layout: list[list[PieceLayout]],
    *arrays: np.ndarray,
) -> Block:
    # the whole per-chunk work in one task (test the chunk with its halo, trim, gather); the
    # task is pure and picklable, so it runs on a distributed cluster's worker processes as well
    # as on threads. The arrays come as arguments of their own: dask finds one nested in a list
    # only by a costly walk of the list (a few ms a task on the scheduler's thread)
    tiles = tiles_of(
        [[(arrays[p[0]], p[1]) if p is not None else None for p in row] for row in layout]
    )
    result = test.evaluate_tiles(tiles)
    # the chunk's own pixels are the middle piece, and the rest of the block its halo
    top, left = int(tiles.heights[0]), int(tiles.widths[0])
    ys = slice(top, top + int(tiles.heights[1]))
    xs = slice(left, left + int(tiles.widths[1]))
    b, a, _, _, counts = split_inputs(tiles.core())
    valid = (counts[0] >= min_valid) & (counts[1] >= min_valid)
    decision = result.disturbed[ys, xs] & valid
    score = np.ascontiguousarray(result.score[ys, xs])
    row0, col0 = origin
    # by the flat positions: np.nonzero of a 2-D mask takes twenty times as long
    rows, cols = np.divmod(np.flatnonzero(decision), decision.shape[1])
    flat = (rows.astype(np.int64) + row0) * width + (cols + col0)
    values = kept_values(
        b[:, rows, cols],
        a[:, rows, cols],
        {
            "evidence": result.evidence[ys, xs][rows, cols],
            "brightening": brightening(result.ratio[ys, xs][rows, cols]),
            "score": score[rows, cols],
        },
    )
    return Block(
        row0,
        col0,
        score,
        preview(b, a),
        flat,
        values,
        int(np.count_nonzero(valid)),
    )


def _compute_and_hand_over(chunk: ChunkGraph, path: Path) -> np.ndarray:
    """Compute a chunk of the next stripe's first column and write it to `path` for that
    stripe."""
    block = compute_chunk(chunk)
    save_chunk(path, block)
    return block


def _take_over(chunk: ChunkGraph, kept: KeptChunk, *, last: bool) -> np.ndarray:
    """A chunk from the file a step before wrote, the file removed when this is its `last` read
    (the scratch holds about one column of chunks). Computed afresh when the file is not there:
    a task a cluster runs again after its first result was lost still gets the same chunk."""
    try:
        block = load_chunk(kept)
    except FileNotFoundError:
        return compute_chunk(chunk)
    if last:
        kept.path.unlink(missing_ok=True)
    return block


def _part(array: np.ndarray, index: tuple[slice, ...]) -> np.ndarray:
    # a copy, so the whole chunk it was cut from can be let go
    return np.ascontiguousarray(array[index])


class _Rows:
    """A stripe of the composites' chunks (`columns`) as a row-major stream: each chunk computed
    once (kept on the scheduler: in this process, or on a cluster's workers) and, once tested,
    shrunk to the halo strips its later neighbours still need. The chunks just right of the
    stripe are the next stripe's first column: each is written to `handover` as it is computed
    for this stripe's halo, let go row by row, and read from there by the next stripe. Those just
    left of it are not read again: `carried` holds their right strips, kept by the stripe
    before. The chunks in `kept` (computed by the statistics sample) are read from their files."""

    def __init__(
        self,
        cube: da.Array,
        halo: int,
        graph: dict[Any, Any],
        columns: range,
        handover: Path,
        carried: dict[tuple[int, int], Delayed] | None = None,
        kept: Mapping[tuple[int, int], KeptChunk] | None = None,
    ) -> None:
        self.cube, self.halo, self.graph, self.columns = cube, halo, graph, columns
        self.handover, self.kept = handover, kept or {}
        self.carried = dict(carried or {})
        self.n_rows, self.n_cols = cube.numblocks[1], cube.numblocks[2]
        # a token: the scheduler names a task by the words of its key before the first token
        self.name = tokenize(cube.name, columns.start)
        self.full: dict[tuple[int, int], Delayed] = {}
        self.finished: set[tuple[int, int]] = set()
        self.right: dict[tuple[int, int], Delayed] = {}
        self.bottom: dict[tuple[int, int], Delayed] = {}
        self.pending: list[tuple[dict[tuple[int, int], Delayed], tuple[int, int], Delayed]] = []

    def inside(self, i: int, j: int) -> bool:
        return 0 <= i < self.n_rows and 0 <= j < self.n_cols

    def missing(self, wanted: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The chunks of `wanted` inside the grid that were never computed."""
        return [
            k
            for k in dict.fromkeys(wanted)
            if self.inside(*k)
            and k not in self.full
            and k not in self.finished
            and k not in self.carried
        ]

    def load(self, keys: list[tuple[int, int]]) -> list[Delayed]:
        """Each chunk of `keys` as one task with only the graph it needs: computing a chunk cut
        out of the whole cube would optimise the whole cube's graph again on every call."""
        out = []
        for i, j in keys:
            key = (self.cube.name, 0, i, j)
            graph, _ = cull(self.graph, [key])
            chunk, name = ChunkGraph(graph, key), self._load(i, j)
            kept = self.kept.get((i, j))
            if kept is not None:
                # when read for this stripe's halo, the file stays: the next stripe reads it too
                task = dask.delayed(_take_over, traverse=False)
                out.append(task(chunk, kept, last=j != self.columns.stop, dask_key_name=name))
            elif j == self.columns.stop:
                task = dask.delayed(_compute_and_hand_over, traverse=False)
                out.append(task(chunk, self._handed_over(i, j), dask_key_name=name))
            elif j == self.columns.start > 0:
                task = dask.delayed(_take_over, traverse=False)
                handed = KeptChunk(self._handed_over(i, j))
                out.append(task(chunk, handed, last=True, dask_key_name=name))
            else:
                task = dask.delayed(compute_chunk, traverse=False)
                out.append(task(chunk, dask_key_name=name))
        return out

    def _load(self, i: int, j: int) -> tuple[str, int, int]:
        return (f"load_chunk-{self.name}", i, j)

    def _handed_over(self, i: int, j: int) -> Path:
        # named by the cube too: the file stands for one chunk of one cube, whatever the stripe
        return self.handover / f"{tokenize(self.cube.name)}-{i}-{j}.npy"

    def keep(self, keys: list[tuple[int, int]], done: list[Delayed]) -> None:
        """Record the computed chunks `done` of `keys`."""
        self.full.update(zip(keys, done, strict=True))

    def pieces(self, i: int, j: int) -> list[list[TilePart]]:
        """The 3 x 3 pieces of chunk (i, j) and its halo: the chunk, then `halo` rows or columns
        of each neighbour (the part facing the chunk)."""
        h = self.halo
        grid: list[list[TilePart]] = []
        for di in (-1, 0, 1):
            row: list[TilePart] = []
            for dj in (-1, 0, 1):
                k = (i + di, j + dj)
                if not self.inside(*k) or (h == 0 and (di or dj)):
                    row.append(None)
                    continue
                ys = slice(-h, None) if di == -1 else slice(None, h) if di == 1 else slice(None)
                xs = slice(-h, None) if dj == -1 else slice(None, h) if dj == 1 else slice(None)
                if k in self.full:
                    row.append((self.full[k], (ys, xs)))
                elif k in self.carried:  # left of the stripe: the strip the last one kept
                    row.append((self.carried[k], (ys, slice(None))))
                elif di == -1:  # a chunk of the row above: its kept bottom strip
                    row.append((self.bottom[k], (slice(None), xs)))
                else:  # the chunk to the left: its kept right strip
                    row.append((self.right[k], (ys, slice(None))))
            grid.append(row)
        return grid

    def tested(self, i: int, j: int) -> None:
        """Keep of chunk (i, j) only what (i, j+1) and the row below still read, and let go of
        the strips no chunk still to come reads."""
        self.finished.add((i, j))
        self._shrink((i, j), right=j + 1 < self.n_cols)
        self.right.pop((i, j - 1), None)
        self.bottom.pop((i - 1, j - 1), None)
        self.carried.pop((i - 1, j - 1), None)
        if j == self.columns[-1]:  # the row is done: so is the halo from beyond the stripe
            self.bottom.pop((i - 1, j), None)
            self.bottom.pop((i - 1, j + 1), None)
            for k in ((i, self.columns[0] - 1), (i, j + 1)):
                if k in self.full:
                    self._shrink(k, right=False)

    def _shrink(self, k: tuple[int, int], *, right: bool) -> None:
        """Cut chunk k's strips (computed with the next call, see `strips_due`) and drop it."""
        block, h = self.full.pop(k), self.halo
        every = slice(None)
        cut = dask.delayed(_part, pure=True)
        if h and right:
            strip = cut(block, (every, every, slice(-h, None)), dask_key_name=self._key("r", k))
            self.right[k] = strip
            self.pending.append((self.right, k, strip))
        if h and k[0] + 1 < self.n_rows:
            strip = cut(block, (every, slice(-h, None), every), dask_key_name=self._key("b", k))
            self.bottom[k] = strip
            self.pending.append((self.bottom, k, strip))

    def _key(self, side: str, k: tuple[int, int]) -> tuple[str, int, int]:
        return (f"halo_strip-{side}{self.name}", *k)

    def carry(self) -> dict[tuple[int, int], Delayed]:
        """The right strips of the stripe's last column, for the next stripe's halo (computed:
        call after the pass over the stripe has kept its due strips)."""
        last = self.columns[-1]
        return {k: strip for k, strip in self.right.items() if k[1] == last}

    def strips_due(self) -> list[Delayed]:
        """The strips cut since the last call that a chunk still to come reads: persisted with
        it, so that the chunks they were cut from are let go."""
        self.pending = [
            (table, k, strip) for table, k, strip in self.pending if table.get(k) is strip
        ]
        return [strip for _, _, strip in self.pending]

    def kept_strips(self, done: list[Delayed]) -> None:
        for (table, k, _), strip in zip(self.pending, done, strict=True):
            if k in table:
                table[k] = strip
        self.pending = []


def _laid_out(pieces: list[list[TilePart]]) -> tuple[list[list[PieceLayout]], ...]:
    """The layout of `pieces` and their arrays, for :func:`_finish_block`'s arguments."""
    arrays: list[Any] = []
    layout: list[list[PieceLayout]] = []
    for row in pieces:
        layout.append([])
        for piece in row:
            if piece is None:
                layout[-1].append(None)
                continue
            layout[-1].append((len(arrays), piece[1]))
            arrays.append(piece[0])
    return (layout, *arrays)


def _stripes(cube: da.Array) -> list[range]:
    """Column ranges of chunks, each as wide as STRIPE_BYTES allows for a row of the cube's
    chunks (at least 3), and as even as can be: what a row holds, whatever the AOI's width."""
    planes, rows, cols = cube.chunks
    chunk_bytes = planes[0] * max(rows) * max(cols) * cube.dtype.itemsize
    n_cols = len(cols)
    widest = max(3, STRIPE_BYTES // chunk_bytes)
    n_stripes = -(-n_cols // widest)
    width = -(-n_cols // n_stripes)
    return [range(c, min(c + width, n_cols)) for c in range(0, n_cols, width)]


def _stripe_graph(cube: da.Array, columns: range) -> dict[Any, Any]:
    """The graph of the chunks a stripe computes (its columns and the one right of it, for the
    halo), materialised for that stripe only: the whole cube's graph, some thirty entries a chunk,
    is held while the pass runs and grows with the AOI (about 50 MB at 20,000² px)."""
    right = min(columns.stop + 1, cube.numblocks[2])
    keys = {
        (cube.name, 0, i, j) for i in range(cube.numblocks[1]) for j in range(columns.start, right)
    }
    return dict(cube.__dask_graph__().cull(keys))


def _halo_wide(cube: da.Array, halo: int) -> da.Array:
    """`cube` with a last row or column of chunks narrower than the halo joined to the one
    before it: a chunk's halo is taken from its next neighbour alone."""

    def joined(sizes: tuple[int, ...]) -> tuple[int, ...]:
        if len(sizes) > 1 and sizes[-1] < halo:
            return (*sizes[:-2], sizes[-2] + sizes[-1])
        return sizes

    planes, rows, cols = cube.chunks
    if (joined(rows), joined(cols)) == (rows, cols):
        return cube
    return cube.rechunk((planes, joined(rows), joined(cols)))


def _around(step: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The chunks testing `step` reads in full: each chunk, its neighbours in its row and in
    the row below (the row above is kept as strips)."""
    return [(i + di, j + dj) for i, j in step for di in (0, 1) for dj in (-1, 0, 1)]


def _steps(n_rows: int, columns: range) -> Iterator[list[tuple[int, int]]]:
    order = ((i, j) for i in range(n_rows) for j in columns)
    while step := list(itertools.islice(order, STEP_CHUNKS)):
        yield step


class _Gathering:
    """Hands each finished block to the caller's writer, reports it, and gathers its changed
    pixels (in memory, or appended to files in `spill`)."""

    def __init__(self, write: BlockWriter, what: str, total: int, spill: Path | None) -> None:
        self.write, self.what, self.total = write, what, total
        self.values = ValueSpill(spill) if spill is not None else ValueParts()
        self.flat_parts: list[np.ndarray] = []
        self.n_valid = self.done = 0
        report(what, 0, total)

    def take(self, block: Block) -> None:
        self.write(block)
        self.flat_parts.append(block.flat_index)
        self.values.append(block.values)
        self.n_valid += block.n_valid
        self.done += 1
        report(self.what, self.done, self.total)

    def gathered(self, n_pixels: int) -> Gathered:
        parts = self.flat_parts
        flat_index = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return Gathered(flat_index, self.values.columns(), self.n_valid, n_pixels)


#: The delayed tests of a step's chunks, with their pieces from the stripe's stream.
StepTests = Callable[[_Rows, list[tuple[int, int]]], list[Delayed]]


def _test_stripe(stream: _Rows, tests_of: StepTests, gathering: _Gathering) -> None:
    """Test the chunks of `stream`'s stripe, row by row, a step at a time: each step's chunks are
    tested while the next step's are computed."""
    steps = list(_steps(stream.n_rows, stream.columns))
    first = stream.missing(_around(steps[0]))
    stream.keep(first, list(dask.persist(*stream.load(first), optimize_graph=False)))
    for t, step in enumerate(steps):
        tests = tests_of(stream, step)
        ahead = stream.missing(_around(steps[t + 1])) if t + 1 < len(steps) else []
        strips = stream.strips_due()
        done = dask.persist(*stream.load(ahead), *strips, *tests, optimize_graph=False)
        stream.keep(ahead, list(done[: len(ahead)]))
        stream.kept_strips(list(done[len(ahead) : len(ahead) + len(strips)]))
        for block in dask.compute(*done[len(ahead) + len(strips) :]):
            gathering.take(block)
        for i, j in step:
            stream.tested(i, j)
    stream.kept_strips(list(dask.persist(*stream.strips_due(), optimize_graph=False)))


def run_pass(
    test: ChangeTest,
    inputs: ChangeInputs,
    min_valid: int,
    write: BlockWriter,
    preview: Preview,
    what: str = "change test",
    spill: Path | None = None,
    handover: Path | None = None,
) -> Gathered:
    """Test every pixel on dask's current scheduler (threads, or a distributed cluster when a
    client is active): each finished block goes to `write`, and the changed pixels' features
    come back. Each finished block is reported as progress of `what` (:mod:`changedetect.progress`).

    The chunks are taken in rows, a couple at a time. Each chunk of the composites is computed
    once: a chunk is tested as soon as the chunks around it are computed, and then only its halo
    strips are kept for the neighbours still to come, so about one row of chunks is held: of
    a stripe of columns (STRIPE_BYTES). The column of chunks right of a stripe is computed for
    its halo and written to `handover` (a folder the caller removes; None: a temporary folder of
    the pass's own), from where the next stripe, whose first column it is, reads it; the column
    left of a stripe it takes from the right strips the stripe before kept. On a cluster the
    folder must be one every worker reads and writes, as `spill` must be. The chunks the
    statistics sample computed (`inputs.kept`) are read from its files.

    With `spill`, the changed pixels' values are appended to files in that folder as the blocks
    come (the caller removes it) and read from there, so that their memory does not grow with
    the amount of change."""
    cube = _halo_wide(inputs.cube, test.halo)
    height, width = cube.shape[1:]
    row_starts = np.cumsum((0, *cube.chunks[1][:-1]))
    col_starts = np.cumsum((0, *cube.chunks[2][:-1]))
    n_rows, n_cols = cube.numblocks[1:]
    # the sample's chunks are those of the cube as it came, before any rechunking for the halo
    kept = inputs.kept if cube is inputs.cube else {}
    gathering = _Gathering(write, what, n_rows * n_cols, spill)
    # the test once in the graph, so building each chunk's task does not walk its statistics
    shared_test = dask.delayed(test, traverse=False)

    def tests_of(stream: _Rows, step: list[tuple[int, int]]) -> list[Delayed]:
        return [
            dask.delayed(_finish_block, pure=True)(
                shared_test,
                (int(row_starts[i]), int(col_starts[j])),
                width,
                min_valid,
                preview,
                *_laid_out(stream.pieces(i, j)),
                dask_key_name=(f"finish_block-{stream.name}", i, j),
            )
            for i, j in step
        ]

    carried: dict[tuple[int, int], Delayed] = {}
    with ExitStack() as scratch:
        if handover is None:
            prefix = "changedetect-handover-"
            handover = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        handover.mkdir(parents=True, exist_ok=True)
        for columns in _stripes(cube):
            graph = _stripe_graph(cube, columns)
            stream = _Rows(cube, test.halo, graph, columns, handover, carried, kept)
            _test_stripe(stream, tests_of, gathering)
            carried = stream.carry()
    release_freed_memory()  # the chunk buffers, before the patch stage
    return gathering.gathered(height * width)
