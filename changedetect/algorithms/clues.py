"""Domain rules on patches: how sure a clue is (a calibrated probability), its level, its priority.

The confidence of a clue is the probability that the ground really changed there. It comes from a
small logistic model on object features of the patch that hold across sensors and change types
(how strong the statistical evidence is, how large and how compact the patch is), trained on the
labelled real scenes in ``../shared/data`` by ``bench/train_clue_model.py`` and shipped as a few
numbers in ``changedetect/data/clue_model.json``. A logistic model's output is itself a
calibrated probability (Platt scaling with several inputs); the bench checks that leave-one-scene-
out with a reliability table and the Brier score.

No spectral index enters the model on purpose: the reference maps label urban change only, so a
model that saw NDVI would learn that a cleared forest is "no change", the opposite of what a
county needs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ChangeDetectError
from ..models import Patch
from ..types import ConfidenceLevel, Priority

#: Object features of a patch, in the order the model reads them.
OBJECT_FEATURES = ("log_evidence", "score", "log_pixels", "compactness", "solidity")
#: The shipped model (package data).
MODEL_FILE = "clue_model.json"
#: Confidence levels, read as probabilities: "medium" from 0.5 (more likely real than not),
#: "high" from 0.8 (four in five such clues are real); below 0.5, "low".
HIGH_CONFIDENCE, MEDIUM_CONFIDENCE = 0.8, 0.5


def object_features(patch: Patch) -> np.ndarray:
    """The model's inputs for one patch (see OBJECT_FEATURES); NaN where a value is missing."""
    evidence = float(patch.stats.get("evidence", math.nan))
    score = float(patch.stats.get("score", math.nan))
    geom = patch.geometry
    area, perimeter = float(geom.area), float(geom.length)
    compactness = 4.0 * math.pi * area / perimeter**2 if perimeter > 0 else math.nan
    hull = float(geom.convex_hull.area)
    solidity = area / hull if hull > 0 else math.nan
    return np.array(
        [
            math.log1p(max(evidence, 0.0)) if math.isfinite(evidence) else math.nan,
            score,
            math.log(max(patch.n_pixels, 1)),
            compactness,
            solidity,
        ],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class ClueModel:
    """Logistic model of P(real change | object features), with the standardisation it was fitted
    on. `name` and `version` are written on every clue it scores."""

    name: str
    version: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    trained_on: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(real) for rows of features `x` (n, k); a missing feature counts as its mean."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        z = np.where(np.isfinite(z), z, 0.0)
        return _sigmoid(z @ np.asarray(self.coef) + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "trained_on": list(self.trained_on),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClueModel:
        model = cls(
            name=str(data["name"]),
            version=str(data["version"]),
            features=tuple(data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            coef=tuple(float(v) for v in data["coef"]),
            intercept=float(data["intercept"]),
            trained_on=tuple(data.get("trained_on", ())),
        )
        if model.features != OBJECT_FEATURES:
            raise ValueError(
                f"clue model {model.tag} reads features {list(model.features)}, this version "
                f"computes {list(OBJECT_FEATURES)}: rebuild it with bench/train_clue_model.py"
            )
        return model


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    *,
    l2: float = 1.0,
    weights: np.ndarray | None = None,
    name: str = "clue-logistic",
    version: str = "0",
    trained_on: Sequence[str] = (),
) -> ClueModel:
    """L2-regularised logistic regression by Newton's method (IRLS) on standardised features.

    `l2` penalises the coefficients (not the intercept) with the strength of that many pseudo-
    observations; `weights` weigh the rows (e.g. so every scene counts the same).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = np.nanmean(x, axis=0)
    scale = np.nanstd(x, axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.where(np.isfinite(x), (x - mean) / scale, 0.0)
    design = np.column_stack([z, np.ones(len(y))])
    penalty = np.full(design.shape[1], float(l2))
    penalty[-1] = 0.0
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        p = _sigmoid(design @ beta)
        grad = design.T @ (w * (y - p)) - penalty * beta
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return ClueModel(
        name,
        version,
        OBJECT_FEATURES,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in beta[:-1]),
        float(beta[-1]),
        tuple(trained_on),
    )


@functools.lru_cache(maxsize=4)
def load_clue_model(path: str | Path | None = None) -> ClueModel:
    """The shipped clue model (no network), or the one at `path`."""
    where = path or f"changedetect/data/{MODEL_FILE}"
    try:
        if path is None:
            text = resources.files("changedetect").joinpath("data", MODEL_FILE).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return ClueModel.from_json(json.loads(text))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChangeDetectError(
            f"clue model {where} cannot be read ({exc}); reinstall the package or rebuild the "
            "model with bench/train_clue_model.py"
        ) from exc


def confidence_level(confidence: float) -> ConfidenceLevel:
    if confidence >= HIGH_CONFIDENCE:
        return "high"
    if confidence >= MEDIUM_CONFIDENCE:
        return "medium"
    return "low"


_LADDER: tuple[Priority, ...] = ("low", "normal", "high", "urgent")


def priority_for(
    change_type: str, tier: str | None, in_zone: bool, confidence: float = 1.0
) -> Priority:
    """Extraction and building inside a core zone come first; non-anthropogenic change ("other",
    e.g. greening) is never above normal; a clue that is more likely false than real
    (confidence below MEDIUM_CONFIDENCE) drops one step."""
    severe = change_type in ("quarry", "construction")
    if in_zone and tier is not None and "core" in tier.lower():
        base: Priority = "urgent" if severe else "high"
    elif in_zone:
        base = "high" if severe else "normal"
    else:
        base = "normal" if severe or change_type == "vegetation_loss" else "low"
    step = _LADDER.index(base)
    if change_type == "other":
        step = min(step, _LADDER.index("normal"))
    if not confidence >= MEDIUM_CONFIDENCE:  # NaN counts as unsure
        step = max(step - 1, 0)
    return _LADDER[step]
