"""How far judging clues as objects can take the pixel F1 on the labelled scenes.

    python bench/object_scorer_experiment.py [--data ../shared/data]

The detector's clues on every labelled scene (bench/scenes.py), filtered by a logistic object
model on growing feature sets, each scored leave-one-scene-out exactly as `+scorer` in
bench/quality_cv.py (model trained on the other scenes, keep-threshold from an inner
leave-one-scene-out on them). Printed beside them: the detector alone, and the ceiling, a filter
that knows the reference (keeps exactly the clues it calls real).

Feature sets:
- `shape`: the shipped model's OBJECT_FEATURES (evidence, score, size, compactness, solidity);
- `+indices`: both dates' NDVI, MNDWI, the after BSI, NDBI and redness, their changes, the
  brightening (per-patch means the pipeline computes);
- `+context`: the robust-z change magnitude inside the patch and in a 3 px ring around it (its
  contrast to the ring) and the change of brightness texture inside it;
each fitted with every clue counting the same, or weighted by the square root of its pixels
(the pixel F1 weighs large clues more).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from changedetect.algorithms.clues import ClueModel, fit_logistic
from changedetect.evaluation import PixelQuality, evaluate_pixels

try:  # run as `python bench/object_scorer_experiment.py` or imported
    from quality_cv import THRESHOLDS, pooled
    from scenes import CITIES, DEFAULT_DATA, SCENES, SceneRun, run_scene
except ImportError:  # pragma: no cover
    from bench.quality_cv import THRESHOLDS, pooled
    from bench.scenes import CITIES, DEFAULT_DATA, SCENES, SceneRun, run_scene

INDICES = (
    "ndvi_before", "ndvi_after", "d_ndvi", "d_bsi", "d_ndbi", "brightening", "mndwi_before",
    "mndwi_after", "redness_after", "bsi_after", "ndbi_after",
)  # fmt: skip
RING_PX = 3
MAD_TO_SIGMA = 1.4826


def change_magnitude(run: SceneRun) -> np.ndarray:
    """Robust-z change vector magnitude (each band difference by its median and MAD)."""
    diff = run.after - run.before
    z2 = np.zeros(diff.shape[1:])
    for band in diff:
        med = np.nanmedian(band)
        sigma = max(float(np.nanmedian(np.abs(band - med))) * MAD_TO_SIGMA, 1e-6)
        z2 += np.nan_to_num((band - med) / sigma) ** 2
    return np.sqrt(z2)


def context_features(run: SceneRun) -> np.ndarray:
    magnitude = change_magnitude(run)
    rows = []
    for label, box in enumerate(ndimage.find_objects(run.labels), start=1):
        if box is None:
            rows.append([np.nan] * 3)
            continue
        ys = slice(max(box[0].start - RING_PX - 1, 0), box[0].stop + RING_PX + 1)
        xs = slice(max(box[1].start - RING_PX - 1, 0), box[1].stop + RING_PX + 1)
        labels, m = run.labels[ys, xs], magnitude[ys, xs]
        inside = labels == label
        ring = ndimage.binary_dilation(inside, iterations=RING_PX) & (labels == 0)
        core = float(np.median(m[inside]))
        around = float(np.median(m[ring])) if ring.any() else np.nan
        bright_after = np.nanmean(run.after[:, ys, xs], axis=0)[inside]
        bright_before = np.nanmean(run.before[:, ys, xs], axis=0)[inside]
        texture = np.log((np.nanstd(bright_after) + 1e-4) / (np.nanstd(bright_before) + 1e-4))
        rows.append([np.log(core + 1e-3), np.log((core + 1e-3) / (around + 1e-3)), texture])
    return np.array(rows, dtype=float).reshape(-1, 3)


def feature_sets(run: SceneRun) -> dict[str, np.ndarray]:
    indices = np.array([[p.stats.get(k, np.nan) for k in INDICES] for p in run.patches])
    indices = indices.reshape(len(run.patches), len(INDICES))
    shape = run.features
    with_indices = np.column_stack([shape, indices])
    return {
        "shape": shape,
        "+indices": with_indices,
        "+context": np.column_stack([with_indices, context_features(run)]),
    }


class Experiment:
    def __init__(self, runs: Sequence[SceneRun]) -> None:
        self.runs = runs
        self.features = [feature_sets(r) for r in runs]

    def train(self, idx: Sequence[int], name: str, weighted: bool) -> ClueModel:
        rows = [(self.features[i][name], self.runs[i]) for i in idx]
        x = np.concatenate([f[r.labelled] for f, r in rows])
        y = np.concatenate([r.real[r.labelled] for _, r in rows]).astype(float)
        w = None
        if weighted:
            size = np.concatenate(
                [np.sqrt([p.n_pixels for p in r.patches])[r.labelled] for _, r in rows]
            )
            w = size / size.mean()
        return fit_logistic(x, y, l2=1.0, weights=w)

    def probability(self, model: ClueModel, i: int, name: str) -> np.ndarray:
        return model.probability(self.features[i][name]) if self.runs[i].patches else np.zeros(0)

    def quality(self, i: int, keep: np.ndarray) -> PixelQuality:
        run = self.runs[i]
        return evaluate_pixels(
            np.isin(run.labels, np.flatnonzero(keep) + 1), run.changed, run.scored
        )

    def threshold(self, idx: Sequence[int], name: str, weighted: bool) -> float:
        f1 = []
        for i in idx:
            model = self.train([j for j in idx if j != i], name, weighted)
            p = self.probability(model, i, name)
            f1.append([self.quality(i, p >= t).f1 for t in THRESHOLDS])
        return float(THRESHOLDS[int(np.argmax(np.mean(f1, axis=0)))])

    def held_out(self, name: str, weighted: bool) -> list[PixelQuality]:
        out = []
        for i in range(len(self.runs)):
            others = [j for j in range(len(self.runs)) if j != i]
            model = self.train(others, name, weighted)
            t = self.threshold(others, name, weighted)
            out.append(self.quality(i, self.probability(model, i, name) >= t))
        return out


def summary(label: str, runs: Sequence[SceneRun], qs: Sequence[PixelQuality]) -> None:
    by = {r.name: q for r, q in zip(runs, qs, strict=True)}
    city = [by[c] for c in CITIES]
    print(
        f"{label:40s} {np.mean([q.f1 for q in city]):6.3f} {pooled(city).f1:7.3f} "
        f"{min(q.f1 for q in city):6.3f} {by['taizhou'].f1:8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    runs = [run_scene(args.data, name) for name in SCENES]
    exp = Experiment(runs)
    print(f"{'clues kept by':40s} {'mean':>6s} {'pooled':>7s} {'worst':>6s} {'taizhou':>8s}")
    summary(
        "all (the detector)",
        runs,
        [exp.quality(i, np.ones(len(r.patches), bool)) for i, r in enumerate(runs)],
    )
    summary("the reference (ceiling)", runs, [exp.quality(i, r.real) for i, r in enumerate(runs)])
    for name in ("shape", "+indices", "+context"):
        for weighted in (False, True):
            label = f"logistic {name}{', sqrt(px) weights' if weighted else ''}"
            summary(label, runs, exp.held_out(name, weighted))


if __name__ == "__main__":
    main()
