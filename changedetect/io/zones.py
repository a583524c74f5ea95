"""Protection zones and counties: vector layers attached to every clue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyogrio
import shapely
from pyproj import CRS
from shapely import STRtree

from ..config import ZonesConfig
from ..errors import ConfigError, SourceError
from ..grids import WGS84, reproject_geometry


@dataclass(frozen=True)
class ProtectionZone:
    """A protected polygon: its name, protection tier and the county that owns it (WGS84)."""

    name: str
    tier: str | None
    county: str | None
    geometry: Any


def load_zones(config: ZonesConfig) -> list[ProtectionZone]:
    """Read a GeoJSON / GeoPackage zone layer, reprojected to WGS84."""
    path = Path(config.path)
    if not path.exists():
        raise ConfigError(f"zones.path {path} does not exist")
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(path)
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
        raise SourceError(f"cannot read zone layer {path}: {exc}") from None
    fields = list(meta["fields"])
    if config.name_field not in fields:
        raise ConfigError(
            f"zones.name_field {config.name_field!r} is not a field of {path} (fields: {fields})"
        )
    geoms = shapely.from_wkb(wkb)
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else WGS84
    geoms = [None if g is None else reproject_geometry(g, crs, WGS84) for g in geoms]

    def column(name: str) -> list[Any]:
        return list(field_data[fields.index(name)]) if name in fields else [None] * len(geoms)

    names, tiers, counties = (
        column(config.name_field),
        column(config.tier_field),
        column(config.county_field),
    )
    return [
        ProtectionZone(str(n), None if t is None else str(t), None if c is None else str(c), g)
        for n, t, c, g in zip(names, tiers, counties, geoms, strict=True)
        if g is not None and not g.is_empty
    ]


class ZoneIndex:
    """Finds the zone a clue falls in: the one it overlaps most."""

    def __init__(self, zones: Sequence[ProtectionZone]) -> None:
        self.zones = list(zones)
        self._tree = STRtree([z.geometry for z in self.zones]) if self.zones else None

    def lookup(self, geometry_wgs84: Any) -> ProtectionZone | None:
        if self._tree is None:
            return None
        best, best_share = None, 0.0
        for i in self._tree.query(geometry_wgs84, predicate="intersects"):
            zone = self.zones[int(i)]
            share = zone.geometry.intersection(geometry_wgs84).area
            if share > best_share:
                best, best_share = zone, share
        return best

    def footprint(self) -> Any:
        """Union of all zones (WGS84), for limiting an AOI to them."""
        return shapely.union_all([z.geometry for z in self.zones]) if self.zones else None
