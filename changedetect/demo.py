"""The embedded default: a synthetic scene with known truth, run end to end and scored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from shapely.geometry import box, mapping

from .config import RunConfig, ZonesConfig, parse_config
from .evaluation import PatchQuality
from .io.atomic import atomic_path
from .models import AoiResult

DEMO_ZONES_NAME = "demo_zones.geojson"


def demo_config(out_dir: Path, *, baseline: str = "window") -> RunConfig:
    """configs/demo.yaml (shipped inside the package, with its zone layer) with the output folder
    set, and the baseline kind (``window``, or ``same_season``: the same season of the three years
    before)."""
    data_dir = resources.files("changedetect").joinpath("data")
    data = yaml.safe_load(data_dir.joinpath("demo.yaml").read_text(encoding="utf-8"))
    data.setdefault("output", {})["dir"] = str(out_dir)
    data["zones"]["path"] = str(data_dir.joinpath(DEMO_ZONES_NAME))
    data.setdefault("baseline", {})["kind"] = baseline
    return parse_config(data, source="demo.yaml")


def write_demo_zones(config: RunConfig, path: Path) -> ZonesConfig:
    """Two protection zones over the config's first AOI: a red-line core and a general control
    zone (over the demo AOI: the demo's zone layer, ``data/demo_zones.geojson``)."""
    west, south, east, north = config.aois[0].bbox or (0, 0, 1, 1)
    mid_x = west + (east - west) * 0.55
    mid_y = south + (north - south) * 0.5
    features = [
        {
            "type": "Feature",
            "geometry": mapping(box(west, mid_y, mid_x, north)),
            "properties": {
                "name": "Qinling red line core",
                "tier": "red_line_core",
                "county": "Zhouzhi",
            },
        },
        {
            "type": "Feature",
            "geometry": mapping(box(mid_x, south, east, north)),
            "properties": {
                "name": "Qinling general control",
                "tier": "general_control",
                "county": "Huyi",
            },
        },
    ]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return ZonesConfig(path=path)


@dataclass
class DemoScore:
    quality: PatchQuality
    truth_path: Path


def score_against_truth(config: RunConfig, result: AoiResult) -> DemoScore:
    """Compare the AOI's clues with the synthetic scene's planted truth; write truth.geojson."""
    from .io.sources.synthetic import SyntheticSource
    from .testing.synthetic import score_clues, truth_geojson

    before, after = config.before.to_window(), config.after.to_window()
    source = SyntheticSource.for_windows(before, after, config.source)  # type: ignore[arg-type]
    truth = source.truth(result.grid, before, after)
    quality = score_clues(result, truth)
    truth_path = result.out_dir / "truth.geojson"
    with atomic_path(truth_path) as tmp:
        tmp.write_text(json.dumps(truth_geojson(truth, result.grid)))
    return DemoScore(quality, truth_path)
