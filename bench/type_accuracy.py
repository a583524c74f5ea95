"""Change-type accuracy on planted quarries and construction sites, scene by scene.

Plants quarries and construction sites into the date-1 image of each of the 7 OSCD cities
(../shared/data/oscd; changedetect.testing.planting, ``--materials varied`` by default: the
material library under the scene's own haze), runs ``changedetect.pipeline.analyse`` on the
before/after pair, and matches clues to planted blobs (``changedetect.evaluation``). The synthetic
demo scene (configs/demo.yaml, the ``changedetect demo`` run) is scored the same way against its
planted truth. Prints one row per scene: planted, hits, recall, precision and type right %, and
the means.

Columns: "type %" is the pipeline's own clues (the classifier with its shipped constants);
"loso %" re-classifies the same hits with every constant listed in
``classify.FITTED_CONSTANTS`` (today the mosaic spectral-angle threshold) chosen by
:func:`select_constants` on the other scenes only, the honest out-of-sample figure; "chosen"
shows the value picked for each held-out scene.

    python bench/type_accuracy.py [--data ../shared/data] [--materials varied|fixed] [--seed 1]
        [--cache /tmp/type_hits.pkl]   # save the hits' patch statistics; --rescore re-reads them
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from changedetect.algorithms import classify
from changedetect.algorithms.patches import polygonise
from changedetect.evaluation import evaluate_patches, footprints_match
from changedetect.testing.planting import plant_disturbances
from changedetect.testing.scenes import analyse_pair, oscd_before, unseen_before

try:  # run as `python bench/type_accuracy.py` or imported as bench.type_accuracy
    from scenes import CITIES, DEFAULT_DATA
except ImportError:  # pragma: no cover
    from bench.scenes import CITIES, DEFAULT_DATA

#: Vegetated ground to plant into; scenes with little of it (desert, dense city) plant into their
#: greenest 20 % instead, so every city is scored.
MIN_NDVI = 0.45


@dataclass
class SceneScore:
    scene: str
    planted: int
    hits: int
    recall: float
    precision: float
    type_right: int
    hit_stats: list[dict[str, float]] = field(default_factory=list)
    hit_truth: list[str] = field(default_factory=list)
    hit_materials: list[tuple[str, ...]] = field(default_factory=list)
    missed_materials: list[tuple[str, ...]] = field(default_factory=list)


def matched_hits(clue_geoms, truth_geoms) -> list[int | None]:
    """Per truth geometry, the clue evaluate_patches matches it to (largest overlap), or None."""
    out: list[int | None] = []
    for geom in truth_geoms:
        best, best_overlap = None, 0.0
        for i, clue in enumerate(clue_geoms):
            if footprints_match(geom, clue):
                overlap = geom.intersection(clue).area
                if overlap > best_overlap:
                    best, best_overlap = i, overlap
        out.append(best)
    return out


def score(name, patches, clues, truth_geoms, truth_types, truth_ids, scored, materials):
    quality = evaluate_patches(
        [p.geometry for p in patches],
        [c.change_type for c in clues],
        truth_geoms,
        truth_types,
        truth_ids,
        scored,
    )
    result = SceneScore(
        name, int(sum(scored)), quality.hits, quality.recall, quality.precision, quality.type_right
    )
    geoms = [p.geometry for p in patches]
    for k, best in enumerate(matched_hits(geoms, truth_geoms)):
        if not scored[k]:
            continue
        if best is None:
            result.missed_materials.append(materials[k])
            continue
        result.hit_stats.append(dict(patches[best].stats))
        result.hit_truth.append(truth_types[k])
        result.hit_materials.append(materials[k])
    return result


def oscd_scene(data: Path, city: str, seed: int, materials: str, work: Path) -> SceneScore:
    return planted_scene(city, *oscd_before(data, city), seed, materials, work)


def planted_scene(
    name: str, grid, before: dict[str, np.ndarray], seed: int, materials: str, work: Path
) -> SceneScore:
    with np.errstate(invalid="ignore", divide="ignore"):
        nd = (before["B08"] - before["B04"]) / (before["B08"] + before["B04"])
    min_ndvi = min(MIN_NDVI, float(np.nanquantile(nd, 0.8)))
    after, blobs = plant_disturbances(
        before, seed=seed, n_blobs=24, materials=materials, min_ndvi=min_ndvi
    )
    result = analyse_pair(grid, before, after, work, name)
    truth = [
        next(iter(polygonise(blob.mask.astype(np.int32), grid.transform).values()))
        for blob in blobs
    ]
    return score(
        name,
        result.patches,
        result.clues,
        truth,
        [blob.change_type for blob in blobs],
        [blob.id for blob in blobs],
        [True] * len(blobs),
        [blob.materials for blob in blobs],
    )


def demo_scene(work: Path) -> SceneScore:
    from changedetect.demo import demo_config
    from changedetect.io.sources.synthetic import SyntheticSource
    from changedetect.pipeline import run

    config = demo_config(work / "demo")
    config = config.model_copy(update={"output": config.output.model_copy(update={"chips": False})})
    (result,) = run(config, incremental=False)
    before, after = config.before.to_window(), config.after.to_window()
    source = SyntheticSource.for_windows(before, after, config.source)  # type: ignore[arg-type]
    truth = source.truth(result.grid, before, after)
    return score(
        "demo (synthetic)",
        result.patches,
        result.clues,
        [t.geometry for t in truth],
        [t.change_type for t in truth],
        [t.id for t in truth],
        [not t.below_mmu for t in truth],
        [() for _ in truth],
    )


def select_constants(train: list[SceneScore]) -> dict[str, float]:
    """Leave-one-scene-out: choose the classifier's data-fitted constants on `train` only.

    Every combination of the candidates in classify.FITTED_CONSTANTS is tried; the one with the
    best mean type accuracy over the training scenes wins (ties: the one nearest the middle of
    the grids).
    """
    grids = getattr(classify, "FITTED_CONSTANTS", {})
    if not grids:
        return {}
    names = list(grids)

    def mean_accuracy(values: dict[str, float]) -> float:
        accs = [
            sum(
                classify.classify_patch(st, **values) == t
                for st, t in zip(s.hit_stats, s.hit_truth, strict=True)
            )
            / len(s.hit_truth)
            for s in train
            if s.hit_truth
        ]
        return float(np.mean(accs)) if accs else 0.0

    def off_middle(values: dict[str, float]) -> float:
        return sum(abs(grids[n].index(values[n]) - len(grids[n]) // 2) for n in names)

    candidates = [dict(zip(names, combo, strict=True)) for combo in product(*grids.values())]
    return max(candidates, key=lambda v: (mean_accuracy(v), -off_middle(v)))


def loso_type_right(scenes: list[SceneScore]) -> list[tuple[int, dict[str, float]]]:
    out = []
    for k, held_out in enumerate(scenes):
        constants = select_constants([s for j, s in enumerate(scenes) if j != k])
        out.append(
            (
                sum(
                    classify.classify_patch(stats, **constants) == truth
                    for stats, truth in zip(held_out.hit_stats, held_out.hit_truth, strict=True)
                ),
                constants,
            )
        )
    return out


def print_table(scenes: list[SceneScore], materials: str) -> None:
    loso = loso_type_right(scenes)
    head = f"{'scene':18s} {'planted':>7s} {'hits':>5s} {'recall':>6s} {'prec':>5s} "
    print(f"planted materials: {materials}")
    print(head + f"{'type ok':>7s} {'type %':>7s} {'loso %':>7s}  chosen")
    rows = []
    for s, (lo, chosen) in zip(scenes, loso, strict=True):
        t = s.type_right / s.hits if s.hits else float("nan")
        lt = lo / s.hits if s.hits else float("nan")
        rows.append((s.recall, s.precision, t, lt))
        print(
            f"{s.scene:18s} {s.planted:7d} {s.hits:5d} {s.recall:6.2f} {s.precision:5.2f} "
            f"{s.type_right:7d} {t:7.1%} {lt:7.1%}  "
            + " ".join(f"{k}={v:g}" for k, v in chosen.items())
        )
    m = np.nanmean(np.array(rows), axis=0)
    hits = sum(s.hits for s in scenes)
    pooled = sum(s.type_right for s in scenes) / hits if hits else float("nan")
    print(
        f"{'mean over scenes':18s} {'':7s} {'':5s} {m[0]:6.2f} {m[1]:5.2f} {'':7s} "
        f"{m[2]:7.1%} {m[3]:7.1%}"
    )
    print(
        f"{'pooled over hits':18s} {'':7s} {hits:5d} {'':6s} {'':5s} "
        f"{sum(s.type_right for s in scenes):7d} {pooled:7.1%} "
        f"{sum(lo for lo, _ in loso) / hits if hits else float('nan'):7.1%}"
    )


def confusion(scenes: list[SceneScore]) -> None:
    """Which planted materials were given which type (hits only)."""
    table: dict[tuple[str, str], dict[str, int]] = {}
    for s in scenes:
        for stats, truth, mats in zip(s.hit_stats, s.hit_truth, s.hit_materials, strict=True):
            key = (truth, "+".join(sorted(mats)) if mats else "(fixed or synthetic)")
            got = classify.classify_patch(stats)
            table.setdefault(key, {}).setdefault(got, 0)
            table[key][got] += 1
    print("\nper planted material (hits): predicted types")
    for (truth, mats), got in sorted(table.items()):
        print(f"  {truth:13s} {mats:45s} {got}")
    missed: dict[str, int] = {}
    for s in scenes:
        for mats in getattr(s, "missed_materials", []):
            key = "+".join(sorted(mats)) if mats else "(fixed or synthetic)"
            missed[key] = missed.get(key, 0) + 1
    print(
        "\nmissed sites by material: "
        + (", ".join(f"{k} {v}" for k, v in sorted(missed.items())) or "none")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--materials", choices=("varied", "fixed"), default="varied")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cities", default=",".join(CITIES))
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--cache", type=Path, help="pickle of the scored scenes (written)")
    parser.add_argument("--rescore", type=Path, help="re-score the hits of a --cache pickle")
    parser.add_argument("--materials-table", action="store_true", help="print per material")
    args = parser.parse_args(argv)
    if args.rescore:
        scenes = pickle.loads(args.rescore.read_bytes())
        for s in scenes:  # today's classifier on yesterday's patches
            s.type_right = sum(
                classify.classify_patch(st) == t
                for st, t in zip(s.hit_stats, s.hit_truth, strict=True)
            )
    else:
        scenes = []
        with tempfile.TemporaryDirectory(prefix="type-accuracy-") as tmp:
            work = Path(tmp)
            for i, city in enumerate(c for c in args.cities.split(",") if c):
                scenes.append(oscd_scene(args.data, city, args.seed + i, args.materials, work))
            if not args.no_demo:
                scenes.append(demo_scene(work))
        if args.cache:
            args.cache.write_bytes(pickle.dumps(scenes))
    print_table(scenes, args.materials)
    if args.materials_table:
        confusion(scenes)
    if not args.rescore:
        unseen(args.data, scenes, args.seed, args.materials)
    return 0


def unseen(data: Path, scenes: list[SceneScore], seed: int, materials: str) -> None:
    """The same planting in a scene none of the rules or constants was chosen on
    (changedetect.testing.scenes.UNSEEN_L1C), and that scene with nothing planted."""
    grid, before = unseen_before(data)
    with tempfile.TemporaryDirectory(prefix="type-accuracy-") as tmp:
        s = planted_scene("brandenburg", grid, before, seed, materials, Path(tmp))
        after, _ = plant_disturbances(before, seed=seed, n_blobs=0)
        quiet = analyse_pair(grid, before, after, Path(tmp), "brandenburg-nothing")
    constants = select_constants(scenes)
    chosen = sum(
        classify.classify_patch(stats, **constants) == truth
        for stats, truth in zip(s.hit_stats, s.hit_truth, strict=True)
    )
    hits = max(s.hits, 1)
    false = ", ".join(
        f"{c.change_type} {c.area_m2:,.0f} m2, confidence {c.confidence:.2f}" for c in quiet.clues
    )
    print(
        f"\nunseen scene {s.scene}: {s.planted} planted, {s.hits} hits, recall {s.recall:.2f}, "
        f"precision {s.precision:.2f}, type right {s.type_right / hits:.1%} (constants chosen on "
        f"the scenes above: {chosen / hits:.1%}); nothing planted: {len(quiet.clues)} clues "
        f"({false or 'none'})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
