"""The one pass over the imagery: every chunk computed once, and the result whatever the chunking."""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.enums import Compression
from rasterio.errors import RasterioIOError

from changedetect.algorithms import detect
from changedetect.algorithms.detect import ChangeInputs, prepare_change_test
from changedetect.algorithms.detect.features import kept_values
from changedetect.engine import blockwise
from changedetect.engine.blockwise import run_pass
from changedetect.io.sinks.chips import PREVIEW_BANDS, preview_bytes
from changedetect.io.sinks.rasters import ScratchRasters
from changedetect.testing.rasters import make_grid

from .test_composite_layers import SPRING, assert_same_test, composite_of, stack
from .test_detect import BARE, FOREST, ROCK, SLASH, SOIL, composite, disk, scene

SHAPE = (300, 280)


def pass_over(tmp_path, chunks: int, count: bool = False, spill: bool = False, handover=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(18)
    patches = [
        (disk(tuple(rng.integers(10, 270, 2)), rng.uniform(3, 12), SHAPE), spectrum)
        for spectrum in (ROCK, SOIL, SLASH, BARE, ROCK)
    ]
    before = scene(FOREST, SHAPE, seed=19)
    after = scene(FOREST, SHAPE, patches=patches, seed=20)
    test, inputs = prepare_change_test(
        composite(before, chunks=chunks), composite(after, chunks=chunks)
    )
    computed: Counter[tuple[int, int]] = Counter()
    if count:

        def counted(block: np.ndarray, block_info=None) -> np.ndarray:
            computed[tuple(block_info[0]["chunk-location"][1:])] += 1
            return block

        inputs = ChangeInputs(inputs.cube.map_blocks(counted, dtype=inputs.cube.dtype))
    out = tmp_path / f"c{chunks}"
    out.mkdir()
    grid = make_grid(shape=SHAPE)
    with ScratchRasters(grid, out / "score.tif", out / "rgb.tif") as scratch:
        gathered = run_pass(
            test,
            inputs,
            1,
            scratch.write,
            preview_bytes,
            spill=out / "spill" if spill else None,
            handover=handover,
        )
    with rasterio.open(out / "score.tif") as src:
        score = src.read(1)
    return gathered, score, computed, inputs.cube.numblocks


def test_the_preview_keeps_each_band_in_tiles_of_its_own(tmp_path):
    # the report's overview reads the after-date RGB (3 of its bands) of the whole AOI: with
    # pixel-interleaved tiles it would decode them all
    with ScratchRasters(make_grid(shape=(70, 90)), tmp_path / "score.tif", tmp_path / "rgb.tif"):
        pass
    with rasterio.open(tmp_path / "rgb.tif") as src:
        assert src.count == PREVIEW_BANDS
        assert src.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"


def _write_one_block(tmp_path, score: np.ndarray) -> None:
    height, width = score.shape
    block = SimpleNamespace(
        row0=0, col0=0, score=score, preview=np.zeros((PREVIEW_BANDS, height, width), np.uint8)
    )
    with ScratchRasters(
        make_grid(shape=score.shape), tmp_path / "score.tif", tmp_path / "rgb.tif"
    ) as scratch:
        scratch.write(block)


def _scratch_score() -> np.ndarray:
    score = np.zeros((70, 90), np.float32)
    score[10:20, 30:40] = 0.75
    score[60:, :5] = np.nan
    return score


def test_the_score_is_packed_and_reads_back_as_written(tmp_path):
    # zeros and NaN outside the changes: packed, they stay out of the page cache and off the disk
    score = _scratch_score()
    _write_one_block(tmp_path, score)
    with rasterio.open(tmp_path / "score.tif") as src:
        assert src.compression == Compression.zstd
        np.testing.assert_array_equal(src.read(1), score)
    with rasterio.open(tmp_path / "rgb.tif") as src:
        assert src.compression is None  # imagery: packing it would cost more than it saves


def test_a_gdal_without_zstd_writes_the_score_as_it_is(tmp_path, monkeypatch):
    opened = rasterio.open

    def without_zstd(path, mode="r", **kwargs):
        if str(kwargs.get("compress", "")).lower() == "zstd":
            raise RasterioIOError("Cannot create TIFF file due to missing codec for zstd.")
        return opened(path, mode, **kwargs)

    monkeypatch.setattr(rasterio, "open", without_zstd)
    score = _scratch_score()
    _write_one_block(tmp_path, score)
    monkeypatch.undo()
    with rasterio.open(tmp_path / "score.tif") as src:
        assert src.compression is None
        np.testing.assert_array_equal(src.read(1), score)


def _joined_block_test(test, cube, rows: slice, cols: slice, min_valid: int, width: int):
    """What a chunk's task computed from its block joined with its halo: the test of the whole
    block, trimmed, and the brightening of the whole block at the changed pixels."""
    h = test.halo
    y0, x0 = max(rows.start - h, 0), max(cols.start - h, 0)
    expanded = cube[:, y0 : rows.stop + h, x0 : cols.stop + h]
    ys = slice(rows.start - y0, rows.stop - y0)
    xs = slice(cols.start - x0, cols.stop - x0)
    b, a, sb, sa, counts = detect.split_inputs(expanded)
    result = test.evaluate(b, a, sb, sa)
    b, a, counts = b[:, ys, xs], a[:, ys, xs], counts[:, ys, xs]
    valid = (counts[0] >= min_valid) & (counts[1] >= min_valid)
    r, c = np.nonzero(result.disturbed[ys, xs] & valid)
    values = {
        "evidence": result.evidence[ys, xs][r, c],
        "brightening": result.brightening[ys, xs][r, c],
        "score": result.score[ys, xs][r, c],
    }
    flat = (r.astype(np.int64) + rows.start) * width + (c + cols.start)
    preview = preview_bytes(b, a)
    return result.score[ys, xs], preview, flat, kept_values(b[:, r, c], a[:, r, c], values), valid


@pytest.mark.parametrize("spread", [False, True])
def test_a_chunk_tested_from_its_pieces_is_its_joined_block_tested(spread):
    rng = np.random.default_rng(21)
    patches = [
        (disk(tuple(rng.integers(10, 110, 2)), rng.uniform(4, 10), (120, 130)), spectrum)
        for spectrum in (ROCK, SOIL, SLASH)
    ]
    before, after = scene(FOREST, (120, 130), seed=22), scene(FOREST, (120, 130), patches, seed=23)
    spreads = [rng.uniform(0.0, 0.02, before.shape).astype(np.float32) for _ in range(2)]
    test, inputs = prepare_change_test(
        composite(before, spread=spreads[0] if spread else None, count=3),
        composite(after, spread=spreads[1] if spread else None, count=3),
    )
    assert test.g.use_spread == spread
    cube = np.asarray(inputs.cube)
    cube[-2:][rng.random((2, 120, 130)) < 0.1] = 1  # too few observations for min_valid
    h, size, width = test.halo, 40, 130
    starts = [(0, 40, 80), (0, 40, 80, 120)]  # the last column of chunks 10 px wide
    changed = invalid = 0
    for i, y0 in enumerate(starts[0]):
        for j, x0 in enumerate(starts[1]):
            rows, cols = slice(y0, min(y0 + size, 120)), slice(x0, min(x0 + size, width))

            def chunk(i, j):
                ys, xs = starts[0][i], starts[1][j]
                return np.ascontiguousarray(cube[:, ys : ys + size, xs : xs + size])

            pieces = [
                [
                    (
                        chunk(i + di, j + dj),
                        (
                            slice(-h, None) if di < 0 else slice(None, h) if di else slice(None),
                            slice(-h, None) if dj < 0 else slice(None, h) if dj else slice(None),
                        ),
                    )
                    if 0 <= i + di < 3 and 0 <= j + dj < 4
                    else None
                    for dj in (-1, 0, 1)
                ]
                for di in (-1, 0, 1)
            ]
            block = blockwise._finish_block(
                test, (y0, x0), width, 2, preview_bytes, *blockwise._laid_out(pieces)
            )
            score, preview, flat, values, valid = _joined_block_test(
                test, cube, rows, cols, 2, width
            )
            assert block.score.tobytes() == np.ascontiguousarray(score).tobytes()
            assert block.preview.tobytes() == preview.tobytes()
            assert block.flat_index.tobytes() == flat.tobytes()
            assert list(block.values) == list(values)
            for name, column in values.items():
                assert block.values[name].tobytes() == column.tobytes(), name
            assert block.n_valid == np.count_nonzero(valid)
            changed, invalid = changed + flat.size, invalid + np.count_nonzero(~valid)
    assert changed > 200 and invalid > 200


@pytest.mark.parametrize("chunks", [64, 100, 148, 150])
def test_every_chunk_is_computed_once_and_the_result_is_that_of_one_chunk(tmp_path, chunks):
    whole, whole_score, _, _ = pass_over(tmp_path, 512)
    gathered, score, computed, numblocks = pass_over(tmp_path, chunks, count=True)
    # one computation per chunk of the composites, never a second for a neighbour's halo
    assert sorted(computed) == [(i, j) for i in range(numblocks[1]) for j in range(numblocks[2])]
    assert set(computed.values()) == {1}
    # and exactly what one chunk over the whole grid gives
    np.testing.assert_array_equal(score, whole_score)
    order, whole_order = np.argsort(gathered.flat_index), np.argsort(whole.flat_index)
    np.testing.assert_array_equal(gathered.flat_index[order], whole.flat_index[whole_order])
    assert gathered.flat_index.size > 500
    for name, values in whole.values.items():
        np.testing.assert_array_equal(gathered.values[name][order], values[whole_order], name)
    assert gathered.n_valid == whole.n_valid == SHAPE[0] * SHAPE[1]


@pytest.mark.parametrize(
    ("chunks", "stripes"),
    [(64, [[0, 1, 2], [3, 4]]), (40, [[0, 1, 2], [3, 4, 5], [6]])],
)
def test_stripes_of_columns_give_the_same_result_and_compute_every_chunk_once(
    tmp_path, monkeypatch, chunks, stripes
):
    whole, whole_score, _, _ = pass_over(tmp_path, 512)
    # room for three chunks in a row: the columns of chunks make two or three stripes
    monkeypatch.setattr(blockwise, "STRIPE_BYTES", 3 * 14 * chunks * chunks * 4)
    assert [list(r) for r in blockwise._stripes(_cube_of_chunks(chunks))] == stripes
    handover = tmp_path / "handover"
    gathered, score, computed, numblocks = pass_over(
        tmp_path / "striped", chunks, count=True, handover=handover
    )
    _assert_same_pass(gathered, score, whole, whole_score)
    # a stripe's first column, computed by the stripe before for its halo, is read back from
    # the handover folder, not computed again; the files are gone once read
    assert sorted(computed) == [(i, j) for i in range(numblocks[1]) for j in range(numblocks[2])]
    assert set(computed.values()) == {1}
    assert list(handover.iterdir()) == []


def test_stripes_hand_their_next_column_over_between_a_clusters_worker_processes(
    tmp_path, monkeypatch
):
    distributed = pytest.importorskip("distributed")
    whole, whole_score, _, _ = pass_over(tmp_path, 512)
    monkeypatch.setattr(blockwise, "STRIPE_BYTES", 3 * 14 * 40 * 40 * 4)
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        gathered, score, _, _ = pass_over(
            tmp_path / "cluster", 40, spill=True, handover=tmp_path / "handover"
        )
        ran = set(cluster.scheduler.task_prefixes)
    assert {"load_chunk", "finish_block"} <= ran
    _assert_same_pass(gathered, score, whole, whole_score)
    # each file one worker wrote was read, and removed, by the task that took the chunk over
    # (a chunk computed afresh instead would leave its file)
    assert list((tmp_path / "handover").iterdir()) == []


def _assert_same_pass(gathered, score, whole, whole_score) -> None:
    np.testing.assert_array_equal(score, whole_score)
    order, whole_order = np.argsort(gathered.flat_index), np.argsort(whole.flat_index)
    np.testing.assert_array_equal(gathered.flat_index[order], whole.flat_index[whole_order])
    for name, values in whole.values.items():
        np.testing.assert_array_equal(
            np.asarray(gathered.values[name])[order], values[whole_order], name
        )
    assert gathered.n_valid == whole.n_valid


def test_values_spilled_by_the_pass_are_those_it_keeps_in_memory(tmp_path):
    kept, score, _, _ = pass_over(tmp_path / "memory", 64)
    spilled, spilled_score, _, _ = pass_over(tmp_path / "disk", 64, spill=True)
    np.testing.assert_array_equal(spilled_score, score)
    # the same pixels in the same order, so the patch means sum them in the same order
    np.testing.assert_array_equal(spilled.flat_index, kept.flat_index)
    assert kept.flat_index.size > 500 and list(spilled.values) == list(kept.values)
    for name, values in kept.values.items():
        assert isinstance(values, np.ndarray)
        np.testing.assert_array_equal(np.asarray(spilled.values[name]), values, name)
    assert (tmp_path / "disk" / "c64" / "spill" / "score.raw").stat().st_size == kept.values[
        "score"
    ].nbytes


def _cube_of_chunks(chunks: int):
    import dask.array as da

    return da.zeros((14, *SHAPE), chunks=(14, chunks, chunks), dtype=np.float32)


def _counted_stack(seed: int, n_times: int, reads: Counter, *, changed: bool = False):
    """A stack of :func:`stack` in 2 x 5 chunks of 35 x 18 pixels, counting each read of a band
    chunk."""
    ds = stack(seed, n_times, changed=changed).chunk({"y": 35, "x": 18})

    def counted(block: np.ndarray, name: str, block_info=None) -> np.ndarray:
        reads[(seed, name, *block_info[0]["chunk-location"])] += 1
        return block

    return ds.assign(
        {
            name: ds[name].copy(data=ds[name].data.map_blocks(counted, name, dtype=ds[name].dtype))
            for name in ds.data_vars
        }
    )


def _sample_four_windows(monkeypatch) -> None:
    """The statistics sampled from a 2 x 2 lattice of 16 px windows (on these tests' grids, eight
    of the ten chunks), though the grid is small enough to be sampled whole."""
    monkeypatch.setattr(detect, "FULL_SAMPLE_PIXELS", 0)
    monkeypatch.setattr(detect, "SAMPLE_LATTICE", 2)
    monkeypatch.setattr(detect, "SAMPLE_WINDOW", 16)


def _layered_pass(tmp_path, n_before: int, n_after: int, keep: bool, reads: Counter):
    before = composite_of(_counted_stack(1, n_before, reads), SPRING)
    after = composite_of(_counted_stack(2, n_after, reads, changed=True), SPRING)
    tmp_path.mkdir(parents=True)
    test, inputs = prepare_change_test(before, after, keep=tmp_path / "sample" if keep else None)
    grid = make_grid(shape=(70, 90))
    with ScratchRasters(grid, tmp_path / "score.tif", tmp_path / "rgb.tif") as scratch:
        gathered = run_pass(
            test, inputs, 1, scratch.write, preview_bytes, handover=tmp_path / "handover"
        )
    with rasterio.open(tmp_path / "score.tif") as src:
        return test, inputs, gathered, src.read(1)


@pytest.mark.parametrize(("n_before", "n_after"), [(4, 3), (1, 1)])
def test_the_chunks_the_statistics_sample_computed_are_read_by_the_pass_not_computed_again(
    tmp_path, monkeypatch, n_before, n_after
):
    _sample_four_windows(monkeypatch)
    reads: Counter = Counter()
    whole_test, _, whole, whole_score = _layered_pass(
        tmp_path / "whole", n_before, n_after, False, reads
    )
    every_chunk = set(reads)
    assert max(reads.values()) == 2  # read by the sample, and again by the pass
    # stripes of three and two columns: the sample's chunks in the column right of the first
    # stripe are read from their files for its halo, and again as the second stripe's own
    monkeypatch.setattr(blockwise, "STRIPE_BYTES", 1)
    reads.clear()
    test, inputs, gathered, score = _layered_pass(tmp_path / "kept", n_before, n_after, True, reads)
    assert sorted(inputs.kept) == [(i, j) for i in (0, 1) for j in (0, 1, 3, 4)]
    assert [list(r) for r in blockwise._stripes(inputs.cube)] == [[0, 1, 2], [3, 4]]
    # every chunk of every band of both stacks read once, by the sample or by the pass
    assert set(reads) == every_chunk and set(reads.values()) == {1}
    assert not any((tmp_path / "kept" / "sample").iterdir())
    assert not any((tmp_path / "kept" / "handover").iterdir())
    # the statistics and the pass as when the sample's chunks are computed again
    assert test.g.use_spread == (n_before > 1)
    for field in dataclasses.fields(whole_test.g):
        kept, was = getattr(test.g, field.name), getattr(whole_test.g, field.name)
        assert np.asarray(kept).tobytes() == np.asarray(was).tobytes(), field.name
    _assert_same_pass(gathered, score, whole, whole_score)


@pytest.mark.parametrize(
    ("n_before", "n_after", "use_spread", "layers"),
    [(4, 3, True, 26), (1, 1, True, 14), (4, 3, False, 14), (4, 1, True, 26)],
)
def test_the_sample_computes_the_spreads_only_when_the_test_may_use_them(
    tmp_path, monkeypatch, n_before, n_after, use_spread, layers
):
    # without a spread on either date (or with the test told not to use them) the sample's
    # chunks are the test's cube as it is, not the cube with twelve empty layers
    _sample_four_windows(monkeypatch)
    before = composite_of(stack(1, n_before), SPRING)
    after = composite_of(stack(2, n_after, changed=True), SPRING)
    test, inputs = prepare_change_test(
        before, after, use_spread=use_spread, keep=tmp_path / "sample"
    )
    assert inputs.kept and test.g.use_spread == (layers == 26)
    for (i, j), kept in inputs.kept.items():
        assert kept.layers is None
        chunk = np.load(kept.path)
        assert chunk.shape[0] == layers == inputs.cube.shape[0]
        rows, cols = (sum(c[:k]) for c, k in zip(inputs.cube.chunks[1:], (i, j), strict=True))
        block = inputs.cube[:, rows : rows + chunk.shape[1], cols : cols + chunk.shape[2]]
        assert chunk.tobytes() == block.compute().tobytes()


@pytest.mark.parametrize(("n_before", "n_after"), [(4, 3), (1, 1)])
def test_the_denser_lattice_reads_the_first_ones_kept_chunks_and_learns_the_same(
    tmp_path, monkeypatch, n_before, n_after
):
    # the first lattice's four windows hold too few pixels: the denser one's sixteen read the
    # chunks the first kept from their files, and the statistics are the xarray composites'
    _sample_four_windows(monkeypatch)
    monkeypatch.setattr(detect, "MIN_SAMPLE_PIXELS", 1200)
    monkeypatch.setattr(detect, "FALLBACK_LATTICE", 4)
    monkeypatch.setattr(detect, "FALLBACK_WINDOW", 12)
    read_kept = []
    cut_kept = detect._cut_kept

    def counted(path, cuts):
        read_kept.append(path)
        return cut_kept(path, cuts)

    monkeypatch.setattr(detect, "_cut_kept", counted)
    before = composite_of(stack(1, n_before), SPRING)
    after = composite_of(stack(2, n_after, changed=True), SPRING)
    test, _ = assert_same_test(before, after, keep=tmp_path / "sample")
    assert read_kept and test.g.gain_error.any()


def test_the_sample_keeps_a_bounded_number_of_chunks_and_the_pass_computes_the_others(
    tmp_path, monkeypatch
):
    _sample_four_windows(monkeypatch)
    reads: Counter = Counter()
    _, _, whole, whole_score = _layered_pass(tmp_path / "whole", 3, 3, False, reads)
    twice = {k for k, n in reads.items() if n == 2}
    monkeypatch.setattr(detect, "KEPT_SAMPLE_CHUNKS", 3)
    reads.clear()
    _, inputs, gathered, score = _layered_pass(tmp_path / "kept", 3, 3, True, reads)
    assert len(inputs.kept) == 3
    # the sample's five other chunks are read by the sample and again by the pass
    assert {k[-2:] for k in twice} == {(i, j) for i in (0, 1) for j in (0, 1, 3, 4)}
    assert {k[-2:] for k, n in reads.items() if n == 2} == {
        (i, j) for i in (0, 1) for j in (0, 1, 3, 4)
    } - set(inputs.kept)
    _assert_same_pass(gathered, score, whole, whole_score)
    assert not any((tmp_path / "kept" / "sample").iterdir())


def test_each_stripe_materialises_the_graph_of_its_own_chunks_only(tmp_path, monkeypatch):
    # the whole cube's graph, held through the pass, grew with the AOI: each stripe's is not
    chunks = 40
    monkeypatch.setattr(blockwise, "STRIPE_BYTES", 3 * 14 * chunks * chunks * 4)
    seen: list[set[int]] = []
    sizes: list[tuple[int, int]] = []
    stripe_graph = blockwise._stripe_graph

    def recorded(cube, columns):
        graph = stripe_graph(cube, columns)
        seen.append({k[3] for k in graph if isinstance(k, tuple) and k[0] == cube.name})
        sizes.append((len(graph), len(dict(cube.__dask_graph__()))))
        return graph

    monkeypatch.setattr(blockwise, "_stripe_graph", recorded)
    whole, whole_score, _, _ = pass_over(tmp_path, 512)
    gathered, score, _, _ = pass_over(tmp_path / "striped", chunks)
    _assert_same_pass(gathered, score, whole, whole_score)
    # the stripes' columns, each with the column right of it (computed for its halo)
    assert seen[1:] == [{0, 1, 2, 3}, {3, 4, 5, 6}, {6}]
    assert all(part < whole for part, whole in sizes[1:])
