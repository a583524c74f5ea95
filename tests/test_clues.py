"""Clue confidence (a calibrated probability from the shipped object model) and priority."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from changedetect.algorithms.clues import (
    OBJECT_FEATURES,
    ClueModel,
    fit_logistic,
    load_clue_model,
    object_features,
    priority_for,
)
from changedetect.errors import ChangeDetectError
from changedetect.models import Patch

ROOT = Path(__file__).resolve().parents[1]


def _patch(geometry, n_pixels: int, evidence: float = 20.0, score: float = 0.7) -> Patch:
    return Patch(1, geometry, n_pixels * 100.0, n_pixels, {"evidence": evidence, "score": score},
                 (0, 0, 1, 1))  # fmt: skip


def _logistic_sample(n: int, coef: np.ndarray, intercept: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(coef))) * [1.0, 2.0, 0.5, 3.0, 1.0] + [0.0, 1.0, -2.0, 0.5, 4.0]
    p = 1.0 / (1.0 + np.exp(-(((x - x.mean(0)) / x.std(0)) @ coef + intercept)))
    return x, (rng.random(n) < p).astype(float), p


def test_fit_recovers_a_known_logistic_law_and_is_calibrated():
    coef, intercept = np.array([1.5, -0.8, 0.0, 0.6, 2.0]), -0.5
    x, y, p_true = _logistic_sample(40_000, coef, intercept)
    model = fit_logistic(x, y, l2=1.0)
    assert np.allclose(model.coef, coef, atol=0.06)
    assert model.intercept == pytest.approx(intercept, abs=0.06)
    # calibrated: in every decile of predicted probability, the observed share matches it
    p = model.probability(x)
    assert np.max(np.abs(p - p_true)) < 0.05
    bins = np.minimum((p * 10).astype(int), 9)
    for b in np.unique(bins):
        sel = bins == b
        if sel.sum() > 500:
            assert y[sel].mean() == pytest.approx(p[sel].mean(), abs=0.03), b


def test_the_penalty_shrinks_towards_the_base_rate():
    x, y, _ = _logistic_sample(2_000, np.array([1.5, -0.8, 0.0, 0.6, 2.0]), -0.5, seed=1)
    loose, tight = fit_logistic(x, y, l2=0.1), fit_logistic(x, y, l2=1e6)
    assert np.abs(tight.coef).max() < 0.01 < np.abs(loose.coef).max()
    assert tight.probability(x) == pytest.approx(np.full(len(y), y.mean()), abs=0.01)


def test_row_weights_count():
    x, y, _ = _logistic_sample(4_000, np.array([1.0, 0.0, 0.0, 0.0, 0.0]), 0.0, seed=2)
    heavy_positive = np.where(y > 0, 3.0, 1.0)
    plain, weighted = fit_logistic(x, y), fit_logistic(x, y, weights=heavy_positive)
    assert weighted.intercept > plain.intercept + 0.8  # ~ log 3 more positives


def test_model_round_trips_and_refuses_other_features():
    x, y, _ = _logistic_sample(500, np.ones(5), 0.0)
    model = fit_logistic(x, y, name="m", version="7", trained_on=["a", "b"])
    again = ClueModel.from_json(json.loads(json.dumps(model.to_json())))
    assert again == model and again.tag == "m@7"
    other = model.to_json() | {"features": ["ndvi", *OBJECT_FEATURES[1:]]}
    with pytest.raises(ValueError, match="rebuild it with bench/train_clue_model.py"):
        ClueModel.from_json(other)


def test_an_unreadable_model_is_a_clear_error(tmp_path):
    broken = tmp_path / "model.json"
    broken.write_text('{"name": "m", "version": "1", "features": ')
    with pytest.raises(ChangeDetectError, match="model.json cannot be read.*train_clue_model"):
        load_clue_model(broken)
    with pytest.raises(ChangeDetectError, match="cannot be read"):
        load_clue_model(tmp_path / "absent.json")
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(load_clue_model().to_json() | {"features": ["ndvi"]}))
    with pytest.raises(ChangeDetectError, match="rebuild it with bench/train_clue_model.py"):
        load_clue_model(stale)


def test_a_missing_feature_counts_as_its_mean():
    x, y, _ = _logistic_sample(500, np.ones(5), 0.0)
    model = fit_logistic(x, y)
    row = x[:1].copy()
    row_nan = row.copy()
    row_nan[0, 1] = np.nan
    row_mean = row.copy()
    row_mean[0, 1] = model.mean[1]
    assert model.probability(row_nan) == pytest.approx(model.probability(row_mean))


def test_object_features_tell_a_compact_site_from_a_thin_line():
    square = object_features(_patch(box(0, 0, 100, 100), 100))
    line = object_features(_patch(box(0, 0, 400, 25), 100))
    ell = object_features(_patch(box(0, 0, 200, 20).union(box(0, 0, 20, 200)), 76))
    i = {name: k for k, name in enumerate(OBJECT_FEATURES)}
    assert square[i["compactness"]] == pytest.approx(math.pi / 4)
    assert square[i["compactness"]] > line[i["compactness"]]
    assert square[i["solidity"]] == pytest.approx(1.0)
    assert ell[i["solidity"]] < 0.5
    assert square[i["log_pixels"]] == pytest.approx(math.log(100))
    assert square[i["log_evidence"]] == pytest.approx(math.log1p(20.0))


def test_the_shipped_model_loads_offline_and_favours_strong_compact_sites():
    model = load_clue_model()
    assert model.tag == "clue-logistic@4"
    assert set(model.trained_on) >= {"abudhabi", "bercy", "mumbai", "taizhou"}
    strong = object_features(_patch(box(0, 0, 300, 300), 900, evidence=200.0))
    weak = object_features(_patch(box(0, 0, 200, 20), 40, evidence=3.0))
    p_strong, p_weak = model.probability(np.stack([strong, weak]))
    assert p_strong > 0.8 > 0.3 > p_weak


def test_priority_follows_type_zone_and_confidence():
    assert priority_for("quarry", "core", True, 0.9) == "urgent"
    assert priority_for("quarry", "core", True, 0.2) == "high"  # more likely false: one step down
    assert priority_for("quarry", "core", True, math.nan) == "high"
    assert priority_for("construction", "general", True, 0.7) == "high"
    assert priority_for("vegetation_loss", None, False, 0.7) == "normal"
    assert priority_for("vegetation_loss", None, False, 0.1) == "low"
    # greening and other non-anthropogenic change is never high, even in a core zone
    assert priority_for("other", "core", True, 0.99) == "normal"
    assert priority_for("other", "core", True, 0.1) == "low"
    assert priority_for("other", None, False, 0.99) == "low"


@pytest.mark.slow
def test_the_shipped_model_is_rebuilt_by_its_script(shared_data, tmp_path):
    out = tmp_path / "model.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_clue_model.py"), "--data", str(shared_data),
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rebuilt = ClueModel.from_json(json.loads(out.read_text()))
    shipped = load_clue_model()
    assert rebuilt.tag == shipped.tag and rebuilt.trained_on == shipped.trained_on
    assert np.allclose(rebuilt.coef, shipped.coef, atol=1e-6)
    assert rebuilt.intercept == pytest.approx(shipped.intercept, abs=1e-6)


@pytest.mark.slow
def test_confidence_is_calibrated_on_scenes_it_has_not_seen(shared_data):
    from bench.quality_cv import DEFAULT_L2, held_out_probabilities
    from bench.scenes import SCENES, run_scene

    runs = [run_scene(shared_data, name) for name in SCENES]
    probs = held_out_probabilities(runs, DEFAULT_L2)
    prob = np.concatenate([p[r.labelled] for p, r in zip(probs, runs, strict=True)])
    real = np.concatenate([r.real[r.labelled] for r in runs]).astype(float)
    raw = np.concatenate(
        [np.array([p.stats["score"] for p in r.patches])[r.labelled] for r in runs]
    )
    brier = np.mean((prob - real) ** 2)
    # better than the base rate told to every clue, and far better than the raw pixel score
    assert brier < np.mean((real.mean() - real) ** 2)
    assert brier < 0.7 * np.mean((raw - real) ** 2)
    # as often right as it claims, on the whole and for the least and the most sure clues
    assert prob.mean() == pytest.approx(real.mean(), abs=0.05)
    low, high = prob < 0.3, prob >= 0.5
    assert real[low].mean() < 0.3 and real[high].mean() > 0.4
    assert real[high].mean() > 2 * real[low].mean()
