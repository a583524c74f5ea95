"""Whether neighbourhood context in the per-pixel test lifts the OSCD F1, leave-one-city-out.

    python bench/context_experiment.py [--data ../shared/data]

Each OSCD city, and the Landsat Taizhou pair, goes through `detect_change` and the patch stage's
cleaning as in bench/oscd_experiment.py and bench/landsat_experiment.py. The shipped decision (a pixel alone at the strict level, or at the
loose level with a majority of its 9 x 9 neighbourhood) is printed first. Then context
statistics, each at a grid of thresholds:

Windows are given in metres of ground (odd pixel counts: 15 px at 10 m, 5 px at 30 m).

- `evidence mean w`: the w x w local mean of the chi-square evidence (-log10 p, capped so that a
  few saturated pixels do not carry a window), the context that carried a per-pixel
  gradient-boosted model (the 7 px mean of the change magnitude, issue 11);
- `swir spread`, `nir spread`, `all-band spread`: the local standard deviation of the robust-z
  band differences (averaged over the bands named), the 15 px spread of the SWIR differences
  being the other context that model leaned on.

Each is used three ways: `alone` (the statistic replaces the decision; the plausibility rules
still apply), `and` (it must agree with the shipped decision: a precision filter) and `or` (it
adds pixels to the shipped decision). Per city the F1 at the threshold chosen on the other six
cities (best mean F1 there) is the leave-one-city-out figure; `oracle` is each city at its own
best threshold, a ceiling no rule without the labels reaches. Taizhou is scored at the threshold
with the best mean F1 over all seven cities (its labelled pixels only), beside the shipped
decision's F1 there.

Then the shipped test with other sizes of its support neighbourhood (`detection.support_m`,
90 m shipped): each size's OSCD mean and Taizhou F1, and the size chosen leave-one-city-out.

Last, whether anything per pixel tells the reference's changes from the rest among the pixels
the detector reports: the AUC, city by city, of the evidence and of both dates' indices,
brightness and band ratios and their changes. A quantity a rule or model could lean on across
cities has an AUC far from 0.5 in every city, on the same side.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from changedetect.algorithms.detect import ChangeLayers, detect_change
from changedetect.config import DetectionConfig
from changedetect.types import ANALYSIS_BANDS

try:  # run as `python bench/context_experiment.py` or imported
    import landsat_experiment as landsat
    from oscd_experiment import CITIES, as_composite, load_city, predicted_mask, scores
except ImportError:  # pragma: no cover
    from bench import landsat_experiment as landsat
    from bench.oscd_experiment import CITIES, as_composite, load_city, predicted_mask, scores

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAD_TO_SIGMA = 1.4826
#: Minimum mapping unit (1000 m2) in pixels: 10 at 10 m, 2 at 30 m (the experiments' own).
MIN_PIXELS = {10.0: 10, 30.0: landsat.MIN_PIXELS}


class Scene:
    """One scene's shipped decision, evidence, plausibility, robust-z band differences and
    reference (`scored` marks the pixels the reference labels)."""

    def __init__(
        self,
        name: str,
        before: np.ndarray,
        after: np.ndarray,
        changed: np.ndarray,
        scored: np.ndarray,
        pixel_m: float,
    ) -> None:
        self.name, self.changed, self.scored, self.pixel_m = name, changed, scored, pixel_m
        self.composites = (
            as_composite(before, dt.date(2016, 1, 1)),
            as_composite(after, dt.date(2018, 1, 1)),
        )
        layers = self.test(DetectionConfig().support_m)
        self.decision = _decision(layers)
        self.evidence = np.nan_to_num(np.asarray(layers.features["evidence"].values))
        self.plausible = np.nan_to_num(np.asarray(layers.score.values)) > 0
        self.z = [robust_z(after[b] - before[b]) for b in range(len(ANALYSIS_BANDS))]
        self.before, self.after = before, after

    def test(self, support_m: float) -> ChangeLayers:
        """The shipped test with a neighbourhood of `support_m` metres of ground."""
        support = DetectionConfig(support_m=support_m).support_pixels(self.pixel_m)
        return detect_change(*self.composites, support_size=support)

    def pixels(self, metres: float) -> int:
        """The odd window edge nearest to `metres` of ground."""
        return max(1, 2 * round((metres / self.pixel_m - 1) / 2) + 1)

    def f1(self, mask: np.ndarray) -> float:
        kept = predicted_mask(mask, MIN_PIXELS[self.pixel_m])
        return scores(kept[self.scored], self.changed[self.scored])[2]


def oscd_scene(root: Path, name: str) -> Scene:
    before, after, changed = load_city(root / "oscd", name)
    return Scene(name, before, after, changed, np.ones_like(changed), 10.0)


def taizhou_scene(root: Path) -> Scene:
    before, after, changed, unchanged = landsat.load(root / "landsat-taizhou")
    return Scene("taizhou", before, after, changed, changed | unchanged, landsat.PIXEL_M)


def robust_z(diff: np.ndarray) -> np.ndarray:
    med = np.nanmedian(diff)
    sigma = max(float(np.nanmedian(np.abs(diff - med))) * MAD_TO_SIGMA, 1e-6)
    return np.nan_to_num((diff - med) / sigma).astype(np.float64)


Statistic = Callable[[Scene], np.ndarray]


def evidence_mean(metres: float, cap: float) -> Statistic:
    def stat(scene: Scene) -> np.ndarray:
        capped = np.minimum(scene.evidence, cap).astype(np.float64)
        return ndimage.uniform_filter(capped, scene.pixels(metres), mode="nearest")

    return stat


def spread(metres: float, bands: Sequence[str]) -> Statistic:
    def stat(scene: Scene) -> np.ndarray:
        size, spreads = scene.pixels(metres), []
        for band in bands:
            z = scene.z[ANALYSIS_BANDS.index(band)]
            mean = ndimage.uniform_filter(z, size, mode="nearest")
            square = ndimage.uniform_filter(z * z, size, mode="nearest")
            spreads.append(np.sqrt(np.maximum(square - mean * mean, 0.0)))
        return np.mean(spreads, axis=0)

    return stat


_EVIDENCE, _SPREAD = np.arange(0.5, 6.0, 0.5), np.arange(0.5, 5.01, 0.25)
STATISTICS: dict[str, tuple[Statistic, np.ndarray]] = {
    "evidence mean 30 m (cap 6)": (evidence_mean(30, 6.0), _EVIDENCE),
    "evidence mean 70 m (cap 6)": (evidence_mean(70, 6.0), _EVIDENCE),
    "evidence mean 150 m (cap 6)": (evidence_mean(150, 6.0), _EVIDENCE),
    "evidence mean 70 m (cap 20)": (evidence_mean(70, 20.0), np.arange(0.5, 10.0, 0.5)),
    "swir spread 150 m": (spread(150, ("B11", "B12")), _SPREAD),
    "nir spread 150 m": (spread(150, ("B08",)), _SPREAD),
    "all-band spread 150 m": (spread(150, ANALYSIS_BANDS), _SPREAD),
}
MODES = ("alone", "and", "or")
#: Edges of the supported test's neighbourhood tried, in metres of ground (shipped: 90).
SUPPORTS_M = (50.0, 70.0, 90.0, 110.0, 130.0)


def decide(scene: Scene, over: np.ndarray, mode: str) -> np.ndarray:
    if mode == "alone":
        return over & scene.plausible
    if mode == "and":
        return scene.decision & over
    return scene.decision | (over & scene.plausible)


def leave_one_out(f1: np.ndarray) -> np.ndarray:
    """Per city, its F1 at the threshold with the best mean F1 over the other cities."""
    return np.array([f1[i, np.delete(f1, i, axis=0).mean(axis=0).argmax()] for i in range(len(f1))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    cities = [oscd_scene(args.data, name) for name in CITIES]
    taizhou = taizhou_scene(args.data)
    shipped = np.array([c.f1(c.decision) for c in cities])
    names = " ".join(f"{c[:7]:>7s}" for c in CITIES)
    print(f"{'':38s}{'mean':>6s}{'oracle':>7s}{'taizhou':>8s}  {names}")
    print(
        f"{'shipped decision':38s}{shipped.mean():6.3f}{'':7s}"
        f"{taizhou.f1(taizhou.decision):8.3f}  {_row(shipped)}"
    )
    for name, (stat, thresholds) in STATISTICS.items():
        values = [stat(c) for c in cities]
        over_taizhou = stat(taizhou)
        for mode in MODES:
            f1 = np.array(
                [
                    [c.f1(decide(c, v >= t, mode)) for t in thresholds]
                    for c, v in zip(cities, values, strict=True)
                ]
            )
            held_out = leave_one_out(f1)
            common = thresholds[f1.mean(axis=0).argmax()]
            at_taizhou = taizhou.f1(decide(taizhou, over_taizhou >= common, mode))
            label = f"{name}, {mode}"
            print(
                f"{label:38s}{held_out.mean():6.3f}{f1.max(axis=1).mean():7.3f}"
                f"{at_taizhou:8.3f}  {_row(held_out)}"
            )
    support_sizes(cities, taizhou)
    separability(cities)


def support_sizes(cities: list[Scene], taizhou: Scene) -> None:
    """The shipped test with other neighbourhood sizes: the support is context too."""
    f1 = np.array([[c.f1(_decision(c.test(m))) for m in SUPPORTS_M] for c in cities])
    held_out = leave_one_out(f1)
    best = SUPPORTS_M[int(f1.mean(axis=0).argmax())]
    print(f"\nsupport neighbourhood (m): {', '.join(f'{m:.0f}' for m in SUPPORTS_M)}")
    print(f"{'OSCD mean at each':38s}" + " ".join(f"{v:6.3f}" for v in f1.mean(axis=0)))
    print(
        f"{'Taizhou at each':38s}"
        + " ".join(f"{taizhou.f1(_decision(taizhou.test(m))):6.3f}" for m in SUPPORTS_M)
    )
    label = "held out (chosen on the others)"
    print(f"{label:38s}{held_out.mean():6.3f}  {_row(held_out)}")
    print(f"best on all seven cities: {best:.0f} m")


def _normalised(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b)


def _band(cube: np.ndarray, name: str) -> np.ndarray:
    return cube[ANALYSIS_BANDS.index(name)]


#: Per-pixel quantities of one date's (band, y, x) reflectance.
QUANTITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "NDVI": lambda c: _normalised(_band(c, "B08"), _band(c, "B04")),
    "NDBI": lambda c: _normalised(_band(c, "B11"), _band(c, "B08")),
    "MNDWI": lambda c: _normalised(_band(c, "B03"), _band(c, "B11")),
    "log brightness": lambda c: np.log(np.maximum(c.mean(axis=0), 1e-4)),
    "log SWIR-2 / SWIR-1": lambda c: np.log(
        np.maximum(_band(c, "B12"), 1e-4) / np.maximum(_band(c, "B11"), 1e-4)
    ),
    "log blue / NIR": lambda c: np.log(
        np.maximum(_band(c, "B02"), 1e-4) / np.maximum(_band(c, "B08"), 1e-4)
    ),
}


def auc(values: np.ndarray, real: np.ndarray) -> float:
    """The probability that a real change's value exceeds a false one's (Mann-Whitney)."""
    ok = np.isfinite(values)
    values, real = values[ok], real[ok]
    n_real, n_false = int(real.sum()), int((~real).sum())
    if n_real == 0 or n_false == 0:
        return float("nan")
    ranks = stats.rankdata(values)
    return float((ranks[real].sum() - n_real * (n_real + 1) / 2) / (n_real * n_false))


def separability(cities: list[Scene]) -> None:
    """Among the pixels the shipped decision reports (after cleaning), how well each quantity
    tells the reference's changes from the rest, city by city (AUC; 0.5 tells nothing, below
    0.5 the other way round)."""
    rows: dict[str, list[float]] = {"evidence": []}
    for city in cities:
        kept = predicted_mask(city.decision, MIN_PIXELS[city.pixel_m])
        real = city.changed[kept]
        rows["evidence"].append(auc(city.evidence[kept], real))
        for name, quantity in QUANTITIES.items():
            before, after = quantity(city.before), quantity(city.after)
            for label, values in (("before", before), ("after", after), ("change", after - before)):
                rows.setdefault(f"{name}, {label}", []).append(auc(values[kept], real))
    print("\nAUC among the reported pixels (real against false changes), per city")
    print(f"{'':38s}{'mean':>6s}  " + " ".join(f"{c.name[:7]:>7s}" for c in cities))
    for name, values in sorted(rows.items(), key=lambda kv: -abs(np.mean(kv[1]) - 0.5)):
        print(f"{name:38s}{np.mean(values):6.3f}  {_row(np.array(values))}")


def _decision(layers: ChangeLayers) -> np.ndarray:
    return np.asarray(layers.disturbed.fillna(False).astype(bool).values)


def _row(values: np.ndarray) -> str:
    return " ".join(f"{v:7.3f}" for v in values)


if __name__ == "__main__":
    main()
