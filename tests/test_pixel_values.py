"""The changed pixels' values kept by the pass: spilled to files, they read back as kept in
memory, and the patch means from them are the same floats."""

from __future__ import annotations

import numpy as np
import pytest

from changedetect.algorithms import patches as patches_module
from changedetect.algorithms.detect.features import kept_values, pixel_features
from changedetect.algorithms.patch_pixels import PatchPixels
from changedetect.algorithms.patches import patch_statistics
from changedetect.engine.pixel_values import ValueParts, ValueSpill
from changedetect.types import ANALYSIS_BANDS


def blocks(seed: int = 3, sizes=(0, 17, 250, 0, 1, 96, 333)):
    """What the pass's blocks hand over: kept values of some pixels each (some blocks none)."""
    rng = np.random.default_rng(seed)
    bands = len(ANALYSIS_BANDS)
    for n in sizes:
        before = rng.uniform(0.01, 0.5, (bands, n)).astype(np.float32)
        after = rng.uniform(0.01, 0.5, (bands, n)).astype(np.float32)
        after[:, rng.random(n) < 0.1] = np.nan  # no data: NaN features, skipped by the means
        tests = {name: rng.normal(size=n) for name in ("evidence", "brightening", "score")}
        yield kept_values(before, after, tests)


def both(tmp_path, sizes=(0, 17, 250, 0, 1, 96, 333)):
    spill, parts = ValueSpill(tmp_path / "spill"), ValueParts()
    for values in blocks(sizes=sizes):
        spill.append(values)
        parts.append(values)
    return spill.columns(), parts.columns()


def test_spilled_values_read_back_as_kept_in_memory(tmp_path):
    spilled, kept = both(tmp_path)
    assert list(spilled) == list(kept) and len(kept) == 15
    n = 17 + 250 + 1 + 96 + 333
    for name, values in kept.items():
        assert values.dtype == np.float32 and values.shape == (n,)
        column = spilled[name]
        assert len(column) == n
        np.testing.assert_array_equal(np.asarray(column), values, name)
        for part in (slice(0, 10), slice(5, 300), slice(600, 800), slice(n, n + 5), slice(9, 3)):
            got = column[part]
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, values[part], f"{name}[{part}]")
    # one file a value, nothing else, in the folder given
    assert sorted(p.name for p in (tmp_path / "spill").iterdir()) == sorted(
        f"{name}.raw" for name in kept
    )
    with pytest.raises(TypeError):
        spilled["score"][np.arange(3)]


def test_a_block_of_other_values_is_refused(tmp_path):
    spill = ValueSpill(tmp_path / "spill")
    spill.append({"a": np.zeros(3, np.float32), "b": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="not"):
        spill.append({"a": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="differ in length"):
        spill.append({"a": np.zeros(2, np.float32), "b": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="float64"):
        spill.append({"a": np.zeros(2), "b": np.ones(2, np.float32)})
    assert len(spill.columns()["a"]) == 3


def test_the_patch_means_of_spilled_values_are_the_same_floats(tmp_path, monkeypatch):
    spilled, kept = both(tmp_path)
    n = len(kept["score"])
    # the pixels' positions in pass order (not raster order), some outside every patch
    rng = np.random.default_rng(5)
    flat_index = rng.permutation(40 * 40)[:n]
    labels = np.where(rng.random(40 * 40) < 0.8, rng.integers(1, 9, 40 * 40), 0)
    pixels = PatchPixels.from_raster(labels.reshape(40, 40).astype(np.int32))
    # parts that cut across the blocks appended
    monkeypatch.setattr(patches_module, "STATISTICS_PART", 100)
    from_disk = patch_statistics(pixels, flat_index, spilled, derive=pixel_features)
    in_memory = patch_statistics(pixels, flat_index, kept, derive=pixel_features)
    assert list(from_disk) == list(in_memory)
    for name, means in in_memory.items():
        np.testing.assert_array_equal(from_disk[name], means, name)
    assert np.isfinite(in_memory["d_ndvi"][1:]).all()
