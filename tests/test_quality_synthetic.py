"""Detection quality on the synthetic scene, against its planted truth.

The demo scene (seed 42) and a second, smaller scene with another seed: patch recall >= 0.95 for
disturbances at or above the mapping unit, precision >= 0.90, change type right for >= 85 %.
"""

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely

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
    return result, score


def assert_valid_through_gdal(path: Path) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    """Every geometry of the vector file at `path` is valid, as GDAL/OGR itself judges it (its
    SQLite dialect's ST_IsValid, what ``ogrinfo -dialect sqlite`` runs) and as shapely judges
    the geometries GDAL reads; returns what pyogrio reads."""
    info = pyogrio.read_info(path)
    column = info["geometry_name"] or "geometry"  # GeoJSON's has no name: "geometry" in SQL
    _, _, _, (ok,) = pyogrio.raw.read(
        path,
        sql=f'SELECT ST_IsValid("{column}") AS ok FROM "{info["layer_name"]}"',
        sql_dialect="SQLITE",
    )
    assert len(ok) == info["features"] > 0
    assert (ok == 1).all(), f"{path.name}: GDAL finds features {np.flatnonzero(ok != 1)} invalid"
    meta, _, wkbs, fields = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkbs)
    invalid = {i: shapely.is_valid_reason(g) for i, g in enumerate(geoms) if not g.is_valid}
    assert not invalid, f"{path.name}: invalid geometries {invalid}"
    return meta, wkbs, fields


def test_demo_scene_quality(tmp_path: Path):
    result, score = _check(demo_config(tmp_path))
    # every vector file the run wrote is valid as GIS tools (GDAL/OGR) read it
    clues_path = result.files["clues"]
    meta, wkbs, fields = assert_valid_through_gdal(clues_path)
    assert len(wkbs) == len(result.clues) > 0
    assert_valid_through_gdal(score.truth_path)
    # a GeoPackage export keeps every geometry valid and the list properties as scalars
    gpkg = tmp_path / "clues.gpkg"
    pyogrio.raw.write(
        gpkg,
        wkbs,
        fields,
        fields=meta["fields"],
        crs=meta["crs"],
        geometry_type="MultiPolygon",
        promote_to_multi=True,
    )
    meta_gpkg, _, fields_gpkg = assert_valid_through_gdal(gpkg)
    exported = dict(zip(meta_gpkg["fields"], fields_gpkg, strict=True))
    written = [f["properties"] for f in json.loads(clues_path.read_text())["features"]]
    for name, position in (("centroid_lon", 0), ("centroid_lat", 1)):
        assert exported[name].tolist() == [p["centroid"][position] for p in written]
    for name, window, position in (
        ("before_start", "before", 0),
        ("before_end", "before", 1),
        ("after_start", "after", 0),
        ("after_end", "after", 1),
    ):
        days = [str(day)[:10] for day in exported[name]]  # GDAL reads these as dates
        assert days == [p[window][position] for p in written], name


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
