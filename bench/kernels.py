"""The change test's compiled kernels against the numpy and scipy compositions they replaced,
timed in the same run on one chunk (512 px and the test's halo), with their CPU-time ratio.

    python bench/kernels.py [--edge 524] [--repeat 20]

Each kernel's result is checked against its reference before it is timed (tests/test_kernels.py
holds them to it); the references are changedetect/testing/kernel_references.py. The first call
of each is not timed (numba compiles or loads its cache then).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from changedetect.algorithms.detect import (
    _ABSORBING_INDEX,
    _B03,
    _B04,
    _B08,
    _B11,
    _SURFACE_BANDS,
    _SURFACE_LEVELS,
    _evidence_table,
    _lookup,
    kernels,
)
from changedetect.algorithms.tiles import tiles_of
from changedetect.testing.kernel_references import REFERENCES


def _cases(edge: int) -> dict[str, tuple[Any, ...]]:
    rng = np.random.default_rng(0)
    before = (0.05 + 0.25 * rng.random((6, edge, edge))).astype(np.float32)
    after = (before * 1.03 + 0.01 * rng.standard_normal(before.shape)).astype(np.float32)
    before[:, :8, :8] = np.nan
    dark = np.array([0.01, 0.02, 0.03, 0.02, 0.01, 0.005], np.float32)
    image = after[3].copy()
    grid, table = _evidence_table(5.2)
    step = float(np.sqrt(grid[-1]) / (len(grid) - 1))
    q = (rng.chisquare(5.2, (edge, edge)) * 1.1).astype(np.float32)
    evidence = kernels.evidence_lookup(q, np.float32(1.1), step, grid, table, 300.0)
    loose = np.float32(-np.log10(0.03))
    return {
        "surface_state": (
            before,
            after,
            dark,
            dark * 1.1,
            _B03,
            _B04,
            _B08,
            _B11,
            _ABSORBING_INDEX,
        ),
        "median3x3": (image, 0.0),
        "median3x3_bands": (after - before,),
        "box_mean3x3": (image,),
        "share_passing": (image > 0.2, 9),
        "evidence_lookup": (q, np.float32(1.1), step, grid, table, 300.0),
        "filtered_differences": (before, after, *_line(rng)),
        "decision": (evidence, evidence > 1.0, np.float32(6.0), loose, 9, np.float32(0.5)),
        "block_test": _block_test_args(before, after, dark, rng),
    }


def _block_test_args(
    before: np.ndarray, after: np.ndarray, dark: np.ndarray, rng: np.random.Generator
) -> tuple[Any, ...]:
    """The fused test's arguments on a chunk and its halo in 3 x 3 tiles, as the pass reads it
    (before, after and their two valid counts), a neighbour's halo 6 px wide."""
    cube = np.concatenate([before, after, np.ones((2, *before.shape[1:]), np.float32)])
    edge, halo = cube.shape[1], 6
    cuts = [slice(0, halo), slice(halo, edge - halo), slice(edge - halo, edge)]
    parts = [
        [(np.ascontiguousarray(cube[:, ys, xs]), (slice(None),) * 2) for xs in cuts] for ys in cuts
    ]
    tiles = tiles_of(parts)
    gain, mx, my = _line(rng)
    k = before.shape[0]
    sigma2 = np.full(k, 0.02**2, np.float32)
    noise = (np.zeros(k, np.float32), sigma2, np.full(k, 0.01, np.float32), sigma2, sigma2)
    return (
        *tiles.geometry(), (tiles.arrays,) * 4, np.array([0, k, 0, 0], np.int64), False,
        (gain, mx, my), noise, True, _lookup(1.1, 5.2), (dark, dark * np.float32(1.1)),
        _SURFACE_BANDS, _ABSORBING_INDEX, _SURFACE_LEVELS,
    )  # fmt: skip


def _line(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A normalisation line per band (gain, before and after centres), float32 as the test's."""
    gain, mx, my = rng.uniform(0.9, 1.1, 6), rng.uniform(0.1, 0.2, 6), rng.uniform(0.1, 0.2, 6)
    return gain.astype(np.float32), mx.astype(np.float32), my.astype(np.float32)


def _cpu_ms(fn: Callable[..., Any], args: tuple[Any, ...], repeat: int) -> float:
    fn(*args)
    start = time.process_time()
    for _ in range(repeat):
        fn(*args)
    return (time.process_time() - start) / repeat * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--edge", type=int, default=524, help="chunk edge with its halo (px)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"one {args.edge}² chunk, CPU ms per call (mean of {args.repeat})")
    print(f"{'kernel':20s} {'numpy/scipy':>12s} {'compiled':>9s} {'x faster':>9s}")
    total_ref = total_kernel = 0.0
    for name, call_args in _cases(args.edge).items():
        kernel, reference = getattr(kernels, name), REFERENCES[name]
        expected, got = reference(*call_args), kernel(*call_args)
        pairs = zip(got, expected, strict=True) if isinstance(got, tuple) else [(got, expected)]
        if not all(np.allclose(g, e, rtol=1e-6, atol=1e-6, equal_nan=True) for g, e in pairs):
            raise SystemExit(f"{name}: the kernel's result differs from its reference")
        ref_ms, kernel_ms = (
            _cpu_ms(reference, call_args, args.repeat),
            _cpu_ms(kernel, call_args, args.repeat),
        )
        total_ref, total_kernel = total_ref + ref_ms, total_kernel + kernel_ms
        print(f"{name:20s} {ref_ms:12.2f} {kernel_ms:9.2f} {ref_ms / kernel_ms:9.1f}")
    print(f"{'all':20s} {total_ref:12.2f} {total_kernel:9.2f} {total_ref / total_kernel:9.1f}")


if __name__ == "__main__":
    main()
