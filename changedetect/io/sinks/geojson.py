"""Patch clues as an RFC 7946 GeoJSON FeatureCollection (WGS84, right-hand rule)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.polygon import orient

from ..atomic import atomic_path

if TYPE_CHECKING:  # the models pull in xarray; the tracker writes GeoJSON through this module
    from ...models import PatchClue

COORD_DECIMALS = 7  # ~1 cm at the equator: well below a 10 m pixel


def rfc7946_geometry(geom: Any) -> dict[str, Any]:
    """GeoJSON geometry with exterior rings counter-clockwise and holes clockwise, coordinates
    rounded to COORD_DECIMALS, valid (OGC) after the rounding."""
    # rounding keeps files small and stable between runs
    rounded = shapely.transform(_oriented(geom), lambda xy: np.round(xy, COORD_DECIMALS))
    if not rounded.is_valid:
        # Rounding moved a vertex onto or across another edge (parts or rings closer than the
        # rounding step: never so for pixel outlines metres apart, possible for unions of
        # footprints). GEOS snaps to the same grid and keeps the result valid: vertices that
        # meet are merged, and the area moves by no more than the rounding itself.
        if not geom.is_valid:
            geom = shapely.make_valid(geom, method="structure", keep_collapsed=False)
        snapped = shapely.set_precision(geom, 10.0**-COORD_DECIMALS)
        rounded = shapely.transform(_oriented(snapped), lambda xy: np.round(xy, COORD_DECIMALS))
    return mapping(rounded)


def _oriented(geom: Any) -> Any:
    if geom.geom_type == "Polygon":
        return orient(geom, sign=1.0)
    if geom.geom_type == "MultiPolygon":
        return type(geom)([orient(p, sign=1.0) for p in geom.geoms])
    return geom


def clue_feature(clue: PatchClue) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": clue.clue_id,
        "geometry": rfc7946_geometry(clue.geometry_wgs84),
        "properties": clue.properties(),
    }


def clues_feature_collection(clues: Sequence[PatchClue]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [clue_feature(clue) for clue in clues]}


#: The collection's text around its features, as ``json.dumps(..., indent=1)`` writes it.
_HEAD = '{\n "type": "FeatureCollection",\n "features": ['
_TAIL = "\n ]\n}"
#: A feature's lines inside the collection: two levels deeper than on its own.
_FEATURE_INDENT = "\n  "


def write_clues_geojson(clues: Sequence[PatchClue], path: Path) -> Path:
    """Write the clues atomically; an empty list gives an empty FeatureCollection.

    Feature by feature, the bytes ``json.dumps`` gives for the whole collection with
    ``indent=1``: the whole collection as Python objects and text took 0.2 GB with 6,300 clues.
    Strings in JSON hold no raw newline, so indenting a feature's own dump by its depth gives
    its lines in the collection."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as out:
        if clues:
            out.write(_HEAD)
            for k, clue in enumerate(clues):
                feature = json.dumps(clue_feature(clue), ensure_ascii=False, indent=1)
                out.write(("," if k else "") + _FEATURE_INDENT)
                out.write(feature.replace("\n", _FEATURE_INDENT))
            out.write(_TAIL)
        else:  # "features": [], on one line
            out.write(json.dumps(clues_feature_collection(clues), ensure_ascii=False, indent=1))
    return path
