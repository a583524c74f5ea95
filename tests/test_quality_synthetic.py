"""Detection quality on the synthetic scene, against its planted truth.

The demo scene (seed 42) and a second, smaller scene with another seed: patch recall >= 0.95 for
disturbances at or above the mapping unit, precision >= 0.90, change type right for >= 85 %.
"""

from pathlib import Path

import pytest

from changedetect.config import parse_config
from changedetect.demo import demo_config, score_against_truth
from changedetect.pipeline import run


def _check(config):
    (result,) = run(config)
    score = score_against_truth(config, result)
    q = score.quality
    summary = (
        f"recall {q.recall:.2f} precision {q.precision:.2f} type {q.type_accuracy:.2f} "
        f"({q.n_clues} clues, {q.n_truth} truth; missed {q.missed}; "
        f"false {[result.clues[i].change_type for i in q.false_clues]})"
    )
    assert q.n_truth >= 10, summary
    assert q.recall >= 0.95, summary
    assert q.precision >= 0.90, summary
    assert q.type_accuracy >= 0.85, summary


def test_demo_scene_quality(tmp_path: Path):
    _check(demo_config(tmp_path))


@pytest.mark.parametrize("seed", [7])
def test_other_seed_quality(tmp_path: Path, seed: int):
    config = parse_config(
        {
            "source": {"kind": "synthetic", "seed": seed},
            "aois": [{"name": "other", "bbox": [107.50, 33.60, 107.585, 33.675]}],
            "before": {"start": "2023-04-01", "end": "2023-06-30"},
            "after": {"start": "2024-04-01", "end": "2024-06-30"},
            "detection": {"chunk_size": 256},
            "output": {"dir": str(tmp_path), "chips": False},
        }
    )
    _check(config)
