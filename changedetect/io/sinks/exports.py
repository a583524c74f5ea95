"""The night's clues in the formats county staff and field officers open: a spreadsheet (CSV), Google
Earth and 奥维 (KML), a handheld GPS (GPX waypoints) and GIS (GeoPackage), beside clues.geojson.

Every format gets flat fields (none of them has list fields): the WGS84 and GCJ-02 centroids as
separate longitude and latitude columns, the windows as their start and end. Written by GDAL
(pyogrio) except the CSV, which is written with a byte-order mark so that a spreadsheet opens its
Chinese zone and county names as UTF-8.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyogrio.raw
import shapely
from shapely.geometry import shape

from ..atomic import atomic_path
from .geojson import rfc7946_geometry

if TYPE_CHECKING:
    from ...models import PatchClue

#: The flat columns of every export, in order (from each clue's GeoJSON properties).
COLUMNS = (
    "clue_id",
    "change_type",
    "priority",
    "confidence",
    "confidence_level",
    "area_m2",
    "area_ha",
    "area_mu",
    "centroid_lon",
    "centroid_lat",
    "gcj02_lon",
    "gcj02_lat",
    "zone",
    "zone_tier",
    "county",
    "detected_at",
    "before_start",
    "before_end",
    "after_start",
    "after_end",
    "alert_status",
    "link_amap",
    "link_geo",
)

#: File name of each export, by output name.
EXPORTS = {"csv": "clues.csv", "kml": "clues.kml", "gpx": "clues.gpx", "gpkg": "clues.gpkg"}


def flat_row(clue: PatchClue) -> dict[str, Any]:
    """The clue's export fields (:data:`COLUMNS`)."""
    props = clue.properties()
    return {name: props.get(name) for name in COLUMNS}


def write_exports(clues: Sequence[PatchClue], out_dir: Path) -> dict[str, Path]:
    """Every export of `clues` into `out_dir`, each written atomically; returns them by name."""
    rows = [flat_row(c) for c in clues]
    files = {name: Path(out_dir) / file for name, file in EXPORTS.items()}
    _write_csv(rows, files["csv"])
    # the geometries exactly as clues.geojson has them (rounded, valid after the rounding)
    polygons = [shape(rfc7946_geometry(c.geometry_wgs84)) for c in clues]
    # KML: Google Earth and 奥维 show a placemark's name and description
    described = [
        {
            "Name": r["clue_id"],
            "Description": (
                f"{r['change_type']}, {r['priority']} priority, {r['area_mu']} 亩 "
                f"({r['area_m2']} m²), {r['zone'] or 'outside protected zones'}; "
                f"GCJ-02 {r['gcj02_lon']}, {r['gcj02_lat']}; {r['link_amap']}"
            ),
        }
        for r in rows
    ]
    _write_ogr(files["kml"], "KML", polygons, described, ("Name", "Description"), layer="clues")
    # GPX: a waypoint per clue at its centroid (a GPS navigates to points, in WGS84)
    points = [shapely.Point(r["centroid_lon"], r["centroid_lat"]) for r in rows]
    waypoints = [
        {"name": r["clue_id"], "desc": described[i]["Description"]} for i, r in enumerate(rows)
    ]
    _write_ogr(files["gpx"], "GPX", points, waypoints, ("name", "desc"), layer="waypoints")
    _write_ogr(files["gpkg"], "GPKG", polygons, rows, COLUMNS, layer="clues")
    return files


@contextmanager
def _fixed_ogr_date() -> Iterator[None]:
    """GDAL stamps a GeoPackage with the time it was written: a fixed stamp keeps the file the
    same when a night is computed again (outputs are compared byte for byte)."""
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_OGR_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


#: The time written into GeoPackages (GDAL's OGR_CURRENT_DATE).
FIXED_OGR_DATE = "2000-01-01T00:00:00.000Z"


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_ogr(
    path: Path,
    driver: str,
    geometries: list[Any],
    rows: Sequence[dict[str, Any]],
    fields: Sequence[str],
    layer: str | None = None,
) -> None:
    def column(name: str) -> np.ndarray:
        values = [r[name] for r in rows]
        if values and all(isinstance(v, int | float) for v in values):
            return np.asarray(values, dtype=np.float64)
        return np.asarray(["" if v is None else str(v) for v in values], dtype=object)

    geometry_type = "Point" if driver == "GPX" else "MultiPolygon"
    if driver != "GPX":  # one layer type for Polygons and MultiPolygons alike
        geometries = [
            shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geometries
        ]
    with atomic_path(path) as tmp, _fixed_ogr_date(), warnings.catch_warnings():
        tmp.unlink()  # GDAL creates the file (a GeoPackage is a database, not a stream)
        # the temporary name is not *.gpkg, which GDAL remarks on; the file is renamed into place
        warnings.filterwarnings("ignore", "The filename extension", RuntimeWarning)
        pyogrio.raw.write(
            tmp,
            geometry=np.asarray(shapely.to_wkb(geometries), dtype=object),
            field_data=[column(f) for f in fields],
            fields=list(fields),
            geometry_type=geometry_type,
            crs="EPSG:4326",
            driver=driver,
            layer=layer,
        )
