"""One chunk of a composite (the pass's cloud mask, count, medians and spreads) by the compiled
kernel against the numpy composition it replaced, CPU ms per chunk for a stack of 1 and of 9
acquisitions (6 bands + SCL, as the demo and the bench scenes), timed alternately.

    python bench/composite_chunk.py [--edge 512] [--repeat 20] [--rounds 5]

The first call of each is not timed (numba compiles or loads its cache then); each round times
`repeat` calls of one then of the other, and the median of the rounds is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from changedetect.algorithms.composite import CompositeChunk
from changedetect.algorithms.masking import SCL_CLOUD_HIGH, PixelMask
from changedetect.testing.kernel_references import composite_chunk_reference
from changedetect.types import ANALYSIS_BANDS

CLOUDS = (3, 8, 9, 10)


def _blocks(n_times: int, edge: int, seed: int = 0) -> list[np.ndarray]:
    """The stack's chunks: bands with a swath edge and a missing band here and there, SCL
    with a fifth of the pixels cloudy."""
    rng = np.random.default_rng(seed)
    shape = (n_times, edge, edge)
    bands = [(0.05 + 0.3 * rng.random(shape)).astype(np.float32) for _ in ANALYSIS_BANDS]
    for t in range(n_times):
        for band in bands:
            band[t, :, : 8 * t] = np.nan
    bands[4][rng.random(shape) < 0.02] = np.nan
    scl = np.full(shape, 4, np.uint8)
    scl[rng.random(shape) < 0.2] = SCL_CLOUD_HIGH
    return [*bands, scl]


def _chunk(n_times: int) -> CompositeChunk:
    mask = PixelMask(tuple(ANALYSIS_BANDS), "SCL", CLOUDS)
    return CompositeChunk(
        (*ANALYSIS_BANDS, "SCL"), len(ANALYSIS_BANDS), tuple(range(n_times)), n_times, 1, mask
    )


def _cpu_ms(call: Callable[[], None], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - start) / repeat * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--edge", type=int, default=512, help="chunk edge (px)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    k = len(ANALYSIS_BANDS)
    print(f"one {args.edge}² chunk, CPU ms per call (median of {args.rounds} rounds)")
    print(f"{'acquisitions':>12s} {'numpy':>8s} {'compiled':>9s} {'x faster':>9s}")
    for n_times in (1, 9):
        chunk, blocks = _chunk(n_times), _blocks(n_times, args.edge)
        outs = [np.empty((2 * k + 1, args.edge, args.edge), np.float32) for _ in range(2)]

        def numpy_fill(out=outs[0], chunk=chunk, blocks=blocks) -> None:  # noqa: ANN001
            composite_chunk_reference(chunk, blocks, out[:k], out[k : 2 * k], out[2 * k])

        def compiled_fill(out=outs[1], chunk=chunk, blocks=blocks) -> None:  # noqa: ANN001
            chunk.fill(blocks, out[:k], out[k : 2 * k], out[2 * k])

        numpy_fill(), compiled_fill()
        if outs[0].tobytes() != outs[1].tobytes():
            raise SystemExit(f"{n_times} acquisitions: the kernel's chunk differs from numpy's")
        numpy_ms, compiled_ms = [], []
        for _ in range(args.rounds):
            numpy_ms.append(_cpu_ms(numpy_fill, args.repeat))
            compiled_ms.append(_cpu_ms(compiled_fill, args.repeat))
        old, new = statistics.median(numpy_ms), statistics.median(compiled_ms)
        print(f"{n_times:12d} {old:8.2f} {new:9.2f} {old / new:9.1f}")


if __name__ == "__main__":
    main()
