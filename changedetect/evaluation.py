"""Detection quality against known truth: patch-level for planted changes, pixel-level for maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from shapely import STRtree

#: A clue and a truth polygon match when their overlap is at least this share of the smaller one.
MIN_OVERLAP_SHARE = 0.1


@dataclass
class PatchQuality:
    """Recall over truth changes at or above the mapping unit, precision over clues."""

    n_truth: int
    n_clues: int
    hits: int
    true_clues: int
    type_right: int
    missed: list[str] = field(default_factory=list)
    false_clues: list[int] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.hits / self.n_truth if self.n_truth else 1.0

    @property
    def precision(self) -> float:
        return self.true_clues / self.n_clues if self.n_clues else 1.0

    @property
    def type_accuracy(self) -> float:
        return self.type_right / self.hits if self.hits else 1.0


def footprints_match(a: Any, b: Any, share: float = MIN_OVERLAP_SHARE) -> bool:
    """Whether two footprints (one CRS) are the same change: they overlap by at least `share` of
    the smaller one."""
    inter = a.intersection(b).area
    return inter > 0 and inter >= share * min(a.area, b.area)


def evaluate_patches(
    clue_geoms: Sequence[Any],
    clue_types: Sequence[str],
    truth_geoms: Sequence[Any],
    truth_types: Sequence[str],
    truth_ids: Sequence[str],
    truth_scored: Sequence[bool],
) -> PatchQuality:
    """Match clues to truth in one projected CRS.

    `truth_scored` marks the truth changes recall is computed on (those at or above the mapping
    unit); a clue over an unscored truth change still counts as a true clue.
    """
    tree = STRtree(list(clue_geoms)) if len(clue_geoms) else None
    hits = type_right = 0
    missed = []
    for geom, ttype, tid, scored in zip(
        truth_geoms, truth_types, truth_ids, truth_scored, strict=True
    ):
        if not scored:
            continue
        best, best_overlap = None, 0.0
        candidates = tree.query(geom, predicate="intersects") if tree is not None else []
        for i in candidates:
            if footprints_match(geom, clue_geoms[int(i)]):
                overlap = geom.intersection(clue_geoms[int(i)]).area
                if overlap > best_overlap:
                    best, best_overlap = int(i), overlap
        if best is None:
            missed.append(tid)
            continue
        hits += 1
        type_right += int(clue_types[best] == ttype)
    truth_tree = STRtree(list(truth_geoms)) if len(truth_geoms) else None
    false_clues = []
    for i, geom in enumerate(clue_geoms):
        candidates = (
            truth_tree.query(geom, predicate="intersects") if truth_tree is not None else []
        )
        if not any(footprints_match(geom, truth_geoms[int(j)]) for j in candidates):
            false_clues.append(i)
    n_scored = int(np.count_nonzero(truth_scored))
    return PatchQuality(
        n_truth=n_scored,
        n_clues=len(clue_geoms),
        hits=hits,
        true_clues=len(clue_geoms) - len(false_clues),
        type_right=type_right,
        missed=missed,
        false_clues=false_clues,
    )


@dataclass
class PixelQuality:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def evaluate_pixels(predicted: np.ndarray, changed: np.ndarray, scored: np.ndarray) -> PixelQuality:
    """Confusion counts over the `scored` pixels."""
    p, c = predicted[scored], changed[scored]
    return PixelQuality(
        tp=int(np.count_nonzero(p & c)),
        fp=int(np.count_nonzero(p & ~c)),
        fn=int(np.count_nonzero(~p & c)),
    )
