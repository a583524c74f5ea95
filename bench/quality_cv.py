"""Detection quality on every labelled real scene, leave-one-scene-out, beside two baselines.

    python bench/quality_cv.py [--data ../shared/data] [--l2 1.0]

Scenes: the seven OSCD Sentinel-2 pairs (urban change labels) and the Landsat TM Taizhou pair
(sparse labels; only labelled pixels are scored). Each scene runs through the pipeline exactly as
`changedetect compare` runs it (bench/scenes.py). A pixel counts as detected when it lies in a
reported clue.

What is printed, per scene and summarised (OSCD mean, OSCD pooled, OSCD worst, Taizhou):
- `cva` and `rz-cva`: the two textbook baselines (bench/baselines.py), computed in this run;
- `detector`: every clue the pipeline reports. Its decision has no constant fitted to these
  scenes (changedetect/algorithms/detect.py says where each comes from);
- `+scorer`: the same clues kept only where the object model's probability reaches a threshold.
  For each scene the model is trained on the other scenes only, and the threshold is chosen by
  an inner leave-one-scene-out on those other scenes: nothing used on a scene has seen it;
- flagged area per km2 on the scene with the least change, against its changed area;
- the reliability of the clue confidence (the held-out model probabilities) against whether the
  reference calls each clue a real change, and the Brier score, beside the same for the raw
  per-pixel score the confidence used to be.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from changedetect.algorithms.clues import ClueModel, fit_logistic
from changedetect.evaluation import PixelQuality, evaluate_pixels

try:  # run as `python bench/quality_cv.py` or imported as bench.quality_cv
    from baselines import cva_otsu, robust_cva
    from scenes import CITIES, DEFAULT_DATA, SCENES, SceneRun, run_scene
except ImportError:  # pragma: no cover
    from bench.baselines import cva_otsu, robust_cva
    from bench.scenes import CITIES, DEFAULT_DATA, SCENES, SceneRun, run_scene

#: Candidate probability thresholds for keeping a clue (0 keeps every clue).
THRESHOLDS = tuple(np.round(np.arange(0.0, 0.91, 0.05), 2))
#: Default L2 strength of the object model (pseudo-observations; see fit_logistic).
DEFAULT_L2 = 1.0


def training_rows(runs: Sequence[SceneRun]) -> tuple[np.ndarray, np.ndarray]:
    """Features and outcomes of the labelled patches of `runs`. Every clue counts the same: the
    confidence is a probability per clue, so the clues, not the scenes, are what it is calibrated
    over."""
    x = np.concatenate([r.features[r.labelled] for r in runs])
    y = np.concatenate([r.real[r.labelled] for r in runs]).astype(float)
    return x, y


def train(runs: Sequence[SceneRun], l2: float, version: str = "cv") -> ClueModel:
    x, y = training_rows(runs)
    return fit_logistic(x, y, l2=l2, version=version, trained_on=[r.name for r in runs])


def kept_quality(run: SceneRun, prob: np.ndarray, threshold: float) -> PixelQuality:
    keep = np.flatnonzero(prob >= threshold) + 1
    return evaluate_pixels(np.isin(run.labels, keep), run.changed, run.scored)


def held_out_probabilities(runs: Sequence[SceneRun], l2: float) -> list[np.ndarray]:
    """Each scene's clue probabilities from a model trained on the other scenes only."""
    out = []
    for i, run in enumerate(runs):
        model = train([r for j, r in enumerate(runs) if j != i], l2)
        out.append(model.probability(run.features) if run.patches else np.zeros(0))
    return out


def choose_threshold(runs: Sequence[SceneRun], l2: float) -> float:
    """The threshold with the best mean F1 over `runs`, each scored by a model trained on the
    others (an inner leave-one-scene-out)."""
    probs = held_out_probabilities(runs, l2)
    f1 = [
        [kept_quality(run, p, t).f1 for t in THRESHOLDS] for run, p in zip(runs, probs, strict=True)
    ]
    return float(THRESHOLDS[int(np.argmax(np.mean(f1, axis=0)))])


def pooled(qs: Sequence[PixelQuality]) -> PixelQuality:
    return PixelQuality(sum(q.tp for q in qs), sum(q.fp for q in qs), sum(q.fn for q in qs))


def reliability(prob: np.ndarray, real: np.ndarray, label: str) -> None:
    edges = np.linspace(0.0, 1.0, 11)
    print(f"\nreliability of {label} (held-out clues with labelled pixels: {len(prob)})")
    print(f"  {'confidence':>11s} {'clues':>6s} {'mean conf':>9s} {'real share':>10s}")
    bins = np.clip(np.digitize(prob, edges) - 1, 0, 9)
    for b in range(10):
        sel = bins == b
        if sel.any():
            print(
                f"  {edges[b]:4.1f}-{edges[b + 1]:3.1f}    {int(sel.sum()):6d} "
                f"{prob[sel].mean():9.3f} {real[sel].mean():10.3f}"
            )
    print(
        f"  Brier score {np.mean((prob - real) ** 2):.4f} (always-{real.mean():.2f}: "
        f"{np.mean((real.mean() - real) ** 2):.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--l2", type=float, default=DEFAULT_L2)
    args = parser.parse_args()

    runs = [run_scene(args.data, name) for name in SCENES]
    methods = ("cva", "rz-cva", "detector", "+scorer")
    quality: dict[str, dict[str, PixelQuality]] = {m: {} for m in methods}
    held_prob, held_real, held_score = [], [], []
    for i, (run, prob) in enumerate(zip(runs, held_out_probabilities(runs, args.l2), strict=True)):
        others = [r for j, r in enumerate(runs) if j != i]
        quality["cva"][run.name] = evaluate_pixels(
            cva_otsu(run.before, run.after), run.changed, run.scored
        )
        quality["rz-cva"][run.name] = evaluate_pixels(
            robust_cva(run.before, run.after), run.changed, run.scored
        )
        quality["detector"][run.name] = evaluate_pixels(run.labels > 0, run.changed, run.scored)
        threshold = choose_threshold(others, args.l2)
        quality["+scorer"][run.name] = kept_quality(run, prob, threshold)
        print(f"{run.name:12s} {len(run.patches):4d} clues; scorer threshold {threshold:.2f}")
        held_prob.append(prob[run.labelled])
        held_real.append(run.real[run.labelled].astype(float))
        held_score.append(
            np.array([p.stats.get("score", np.nan) for p in run.patches])[run.labelled]
        )

    print(f"\n{'scene':12s}" + "".join(f" {m:>20s}" for m in methods))
    print(f"{'':12s}" + "".join(f" {'P     R     F1':>20s}" for _ in methods))
    for name in SCENES:
        cells = "".join(
            f"   {q.precision:5.3f} {q.recall:5.3f} {q.f1:5.3f}"
            for q in (quality[m][name] for m in methods)
        )
        print(f"{name:12s}{cells}")
    print()
    for label, fn in (
        ("OSCD mean F1", lambda qs: np.mean([qs[c].f1 for c in CITIES])),
        ("OSCD pooled", lambda qs: pooled([qs[c] for c in CITIES]).f1),
        ("OSCD worst", lambda qs: min(qs[c].f1 for c in CITIES)),
        ("Taizhou F1", lambda qs: qs["taizhou"].f1),
    ):
        print(f"{label:12s}" + "".join(f" {fn(quality[m]):20.3f}" for m in methods))

    low = min((r for r in runs if r.name in CITIES), key=lambda r: r.changed[r.scored].mean())
    km2 = low.scored.sum() * low.pixel_km2
    print(
        f"\nleast change: {low.name} ({low.changed[low.scored].mean():.2%} of pixels changed, "
        f"{low.changed[low.scored].sum() * low.pixel_km2 / km2 * 1e6:,.0f} m2/km2)"
    )
    for m in methods:
        q = quality[m][low.name]
        flagged = (q.tp + q.fp) * low.pixel_km2 / km2 * 1e6
        print(
            f"  {m:10s} flags {flagged:9,.0f} m2/km2 ({(q.tp + q.fp) / max(q.tp + q.fn, 1):.1f}"
            " x the changed area)"
        )

    prob, real = np.concatenate(held_prob), np.concatenate(held_real)
    reliability(prob, real, "the confidence (object model, leave-one-scene-out)")
    score = np.nan_to_num(np.concatenate(held_score))
    reliability(score, real, "the raw per-pixel score (the former confidence)")


if __name__ == "__main__":
    main()
