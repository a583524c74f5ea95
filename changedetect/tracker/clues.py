"""Reading patch clues (the pipeline's ``clues.geojson`` Features) into typed records."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from shapely.geometry.base import BaseGeometry

from .errors import ClueFormatError
from .geometry import parse_geojson_geometry, polygonal, to_geojson
from .states import PRIORITY_RANK

if TYPE_CHECKING:  # the pipeline's models pull in xarray: not at import time
    from ..models import PatchClue


@dataclass(frozen=True)
class Clue:
    """One patch clue as the tracker uses it (WGS84 geometry, paths resolved)."""

    clue_id: str
    aoi: str | None
    detected_on: dt.date
    geometry: BaseGeometry
    area_m2: float
    change_type: str
    confidence: float
    confidence_level: str | None = None
    zone: str | None = None
    zone_tier: str | None = None
    county: str | None = None
    priority: str = "normal"
    chip_before: str | None = None
    chip_after: str | None = None
    chip_change: str | None = None
    """The NDVI-change chip (None for clues from runs before it was drawn)."""
    source: str | None = None
    alert_status: str | None = None
    """``probable``, ``confirmed`` or ``dropped`` (changedetect.algorithms.alerts); None for clues
    from runs that do not follow alerts, taken as confirmed."""
    properties: dict[str, Any] = field(default_factory=dict)


#: What :func:`~changedetect.tracker.ingest` accepts as clues: a ``clues.geojson`` path, a
#: FeatureCollection mapping, or an iterable of Features, pipeline PatchClues or Clues.
ClueInput: TypeAlias = (
    "str | Path | Mapping[str, Any] | Iterable[Mapping[str, Any] | PatchClue | Clue]"
)


#: Alert states a clue can carry (None: a clue from a run that does not follow alerts).
ALERT_STATUSES = (None, "probable", "confirmed", "dropped")


def _text(props: Mapping[str, Any], key: str) -> str | None:
    value = props.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _number(props: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = props.get(key, default)
    if value is None:
        raise ClueFormatError(f"{where}: property {key!r} is missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ClueFormatError(f"{where}: property {key!r} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise ClueFormatError(f"{where}: property {key!r} is {value!r}, not a finite number")
    return number


def _resolve(path: str | None, base_dir: Path | None) -> str | None:
    """Chip paths are relative to the GeoJSON's folder: store them resolved."""
    if path is None:
        return None
    p = Path(path)
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    return str(p)


def parse_feature(
    feature: Mapping[str, Any],
    *,
    index: int = 0,
    base_dir: Path | None = None,
    source: str | None = None,
) -> Clue:
    """One GeoJSON Feature of ``clues.geojson`` → :class:`Clue` (raises :class:`ClueFormatError`)."""
    where = f"{source or 'clues'} feature #{index}"
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise ClueFormatError(f"{where} is not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise ClueFormatError(f"{where}: properties is not an object")
    clue_id = _text(props, "clue_id") or (str(feature["id"]) if feature.get("id") else None)
    if not clue_id:
        raise ClueFormatError(f"{where}: property 'clue_id' is missing")
    where = f"{source or 'clues'} clue {clue_id}"
    raw_day = props.get("detected_at")
    try:
        detected_on = dt.date.fromisoformat(str(raw_day)[:10])
    except ValueError:
        raise ClueFormatError(
            f"{where}: detected_at is {raw_day!r}, not a date YYYY-MM-DD"
        ) from None
    try:
        geometry = parse_geojson_geometry(feature.get("geometry"))
    except ValueError as exc:
        raise ClueFormatError(f"{where}: {exc}") from None
    confidence = _number(props, "confidence", where, default=0.5)
    if not 0.0 <= confidence <= 1.0:
        raise ClueFormatError(f"{where}: confidence {confidence} is outside 0-1")
    priority = _text(props, "priority") or "normal"
    if priority not in PRIORITY_RANK:
        raise ClueFormatError(
            f"{where}: priority {priority!r} is not one of {', '.join(PRIORITY_RANK)}"
        )
    alert_status = _text(props, "alert_status")
    if alert_status not in ALERT_STATUSES:
        raise ClueFormatError(
            f"{where}: alert_status {alert_status!r} is not one of "
            f"{', '.join(s for s in ALERT_STATUSES if s)}"
        )
    return Clue(
        clue_id=clue_id,
        aoi=_text(props, "aoi"),
        detected_on=detected_on,
        geometry=geometry,
        area_m2=_number(props, "area_m2", where, default=0.0),
        change_type=_text(props, "change_type") or "other",
        confidence=confidence,
        confidence_level=_text(props, "confidence_level"),
        zone=_text(props, "zone"),
        zone_tier=_text(props, "zone_tier"),
        county=_text(props, "county"),
        priority=priority,
        chip_before=_resolve(_text(props, "chip_before"), base_dir),
        chip_after=_resolve(_text(props, "chip_after"), base_dir),
        chip_change=_resolve(_text(props, "chip_change"), base_dir),
        source=source,
        alert_status=alert_status,
        properties=dict(props),
    )


def from_patch_clue(
    clue: PatchClue, *, base_dir: Path | None = None, source: str | None = None
) -> Clue:
    """A pipeline :class:`~changedetect.models.PatchClue` → :class:`Clue`."""
    feature = {
        "type": "Feature",
        "geometry": to_geojson(polygonal(clue.geometry_wgs84)),
        "properties": clue.properties(),
    }
    return parse_feature(feature, base_dir=base_dir, source=source)


def read_clues_file(path: str | Path) -> list[Clue]:
    """All clues of a ``clues.geojson`` file (chip paths resolved against its folder)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClueFormatError(f"clues file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClueFormatError(f"clues file {path} is not readable JSON: {exc}") from None
    return parse_clues(data, base_dir=path.resolve().parent, source=str(path.resolve()))


def parse_clues(
    data: Any, *, base_dir: Path | None = None, source: str | None = None
) -> list[Clue]:
    """Clues from a FeatureCollection, or an iterable of Features / PatchClues / Clues."""
    if isinstance(data, Mapping):
        if data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
            raise ClueFormatError(
                f"{source or 'clues'} is not a GeoJSON FeatureCollection with a 'features' list"
            )
        data = data["features"]
    clues: list[Clue] = []
    for index, item in enumerate(data):
        if isinstance(item, Clue):
            clues.append(item)
        elif isinstance(item, Mapping):
            clues.append(parse_feature(item, index=index, base_dir=base_dir, source=source))
        else:
            from ..models import PatchClue

            if not isinstance(item, PatchClue):
                raise ClueFormatError(
                    f"{source or 'clues'} item #{index} is a {type(item).__name__}, "
                    "not a GeoJSON Feature, PatchClue or Clue"
                )
            clues.append(from_patch_clue(item, base_dir=base_dir, source=source))
    return clues


def load_clues(
    clues: ClueInput, *, source: str | Path | None = None
) -> tuple[list[Clue], str | None]:
    """Whatever :func:`ingest` was given → (clues, source path or label)."""
    if isinstance(clues, str | Path):
        path = Path(clues)
        return read_clues_file(path), str(path.resolve())
    label = str(Path(source).resolve()) if isinstance(source, Path) else source
    base_dir = Path(label).parent if label and label.endswith(".geojson") else None
    return parse_clues(clues, base_dir=base_dir, source=label), label
