"""Rebuild the shipped clue model (changedetect/data/clue_model.json) from the labelled scenes.

    python bench/train_clue_model.py [--data ../shared/data] [--out changedetect/data/clue_model.json]

Runs every labelled scene through the pipeline as `changedetect compare` does (bench/scenes.py),
takes each clue's object features and whether the reference calls it a real change, and fits the
logistic model of changedetect.algorithms.clues on all of them (every scene weighing the same).
Deterministic: the same data gives the same numbers. How well it does on a scene it has not seen
is measured by bench/quality_cv.py, which refits it leave-one-scene-out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from changedetect.algorithms.clues import MODEL_FILE, ClueModel

try:  # run as `python bench/train_clue_model.py` or imported as bench.train_clue_model
    from quality_cv import DEFAULT_L2, train
    from scenes import DEFAULT_DATA, SCENES, run_scene
except ImportError:  # pragma: no cover
    from bench.quality_cv import DEFAULT_L2, train
    from bench.scenes import DEFAULT_DATA, SCENES, run_scene

#: Bump when the features, the labels or the fitting change.
MODEL_VERSION = "4"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "changedetect" / "data" / MODEL_FILE


def build(data: Path, l2: float = DEFAULT_L2) -> ClueModel:
    runs = [run_scene(data, name) for name in SCENES]
    model = train(runs, l2, version=MODEL_VERSION)
    return ClueModel.from_json(model.to_json() | {"name": "clue-logistic"})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--l2", type=float, default=DEFAULT_L2)
    args = parser.parse_args()
    model = build(args.data, args.l2)
    args.out.write_text(json.dumps(model.to_json(), indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {model.tag} to {args.out}: "
        + ", ".join(f"{f} {c:+.3f}" for f, c in zip(model.features, model.coef, strict=True))
        + f", intercept {model.intercept:+.3f}"
    )


if __name__ == "__main__":
    main()
