"""The scene statistics (`estimate_globals`) against the numpy code they were rewritten from,
timed in the same run on a synthetic sample the size of a large scene's (nine 256² windows),
with their CPU-time ratio.

    python bench/scene_statistics.py [--edge 256] [--repeat 5] [--clouds] [--no-spreads]

The two results are checked to be the same to the bit before they are timed
(tests/test_detect.py holds them to it); the reference is
changedetect/testing/statistics_reference.py. The first call of each is not timed (numba loads
its cache then). Calls alternate, so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from changedetect.algorithms.detect import estimate_globals
from changedetect.testing.statistics_reference import (
    estimate_globals_reference,
    statistics_sample,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edge", type=int, default=256, help="edge of each of nine windows")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clouds", action="store_true", help="a cloud in every other window")
    parser.add_argument("--no-spreads", action="store_true", help="single acquisitions")
    args = parser.parse_args()
    samples = statistics_sample(
        0,
        shape=(args.edge, args.edge),
        clouds=args.clouds,
        spreads=None if args.no_spreads else (True, True),
    )
    new, old = estimate_globals(samples, 3), estimate_globals_reference(samples, 3)
    if new is None or old is None:
        raise SystemExit("too few valid pixels in the sample")
    for name, value in vars(old).items():
        if np.asarray(getattr(new, name)).tobytes() != np.asarray(value).tobytes():
            raise SystemExit(f"{name} differs from the reference")
    times: dict[str, list[float]] = {"reference": [], "estimate_globals": []}
    for _ in range(args.repeat):
        for name, function in (
            ("reference", estimate_globals_reference),
            ("estimate_globals", estimate_globals),
        ):
            start = time.process_time()
            function(samples, 3)
            times[name].append(time.process_time() - start)
    old_ms, new_ms = (1e3 * statistics.median(times[k]) for k in times)
    print(f"9 x {args.edge}² windows: reference {old_ms:.0f} ms, now {new_ms:.0f} ms CPU")
    print(f"ratio {old_ms / new_ms:.2f}")


if __name__ == "__main__":
    main()
