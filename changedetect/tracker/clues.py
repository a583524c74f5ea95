"""Reading patch clues (the pipeline's ``clues.geojson`` Features) into typed records.

Every field is checked against what the ledger can store (types, lengths, text, WGS84 geometry
of positive area), so that one bad clue is set aside with its reason (:class:`RejectedClue`)
instead of failing the whole file in the database.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import numbers
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from shapely.geometry.base import BaseGeometry

from .errors import ClueFormatError
from .geometry import (
    antimeridian_problem,
    parse_geojson_geometry,
    polygonal,
    to_geojson,
    wgs84_problem,
)
from .geometry import area_m2 as geodesic_area_m2
from .limits import CLUE_TEXT_COLUMNS, text_problem
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


#: Alert states a clue can carry (None: a clue from a run that does not follow alerts).
ALERT_STATUSES = (None, "probable", "confirmed", "dropped")


@dataclass(frozen=True)
class RejectedClue:
    """A clue set aside instead of stored: the item as given and the one reason why."""

    index: int
    """Its position in the input (the FeatureCollection's ``features``)."""
    clue_id: str | None
    reason: str
    item: Any
    """What the input held there: a GeoJSON Feature, or whatever stood in its place."""


@dataclass
class ClueBatch:
    """One input's clues, sorted into those that can be stored and those set aside."""

    clues: list[Clue]
    rejected: list[RejectedClue] = field(default_factory=list)
    source: str | None = None

    def strict(self) -> list[Clue]:
        """The clues, or :class:`ClueFormatError` naming the first clue set aside."""
        if self.rejected:
            first = self.rejected[0]
            where = f"clue {first.clue_id}" if first.clue_id else f"feature #{first.index}"
            raise ClueFormatError(f"{self.source or 'clues'} {where}: {first.reason}")
        return self.clues


#: What :func:`~changedetect.tracker.ingest` accepts as clues: a ``clues.geojson`` path, a
#: FeatureCollection mapping, an iterable of Features, pipeline PatchClues or Clues, or a batch
#: already sorted by :func:`sort_clues`.
ClueInput: TypeAlias = (
    "str | Path | ClueBatch | Mapping[str, Any] | Iterable[Mapping[str, Any] | PatchClue | Clue]"
)


class _Unstorable(Exception):
    """Why one clue cannot be stored (internal: becomes a reject or a ClueFormatError)."""

    def __init__(self, reason: str, clue_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.clue_id = clue_id


def _checked_text(field: str, value: Any, clue_id: str | None) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None  # how tables exported through pandas spell "no value"
    if not isinstance(value, str):
        raise _Unstorable(f"property {field!r} is {value!r}, not text", clue_id)
    problem = text_problem(field, value)
    if problem:
        raise _Unstorable(problem, clue_id)
    return value


def _number(props: Mapping[str, Any], key: str, clue_id: str, default: float) -> float:
    value = props.get(key, default)
    if value is None:
        raise _Unstorable(f"property {key!r} is missing", clue_id)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Unstorable(f"property {key!r} is {value!r}, not a number", clue_id)
    number = float(value)
    if not math.isfinite(number):
        raise _Unstorable(f"property {key!r} is {value!r}, not a finite number", clue_id)
    return number


def _resolve(path: str | None, base_dir: Path | None) -> str | None:
    """Chip paths are relative to the GeoJSON's folder: store them resolved."""
    if path is None:
        return None
    p = Path(path)
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    return str(p)


def _clue_id(feature: Mapping[str, Any], props: Mapping[str, Any]) -> str:
    raw = props.get("clue_id")
    if raw is None:
        # a Feature's own id may be a number (RFC 7946 §3.2)
        raw = feature.get("id")
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)
    if isinstance(raw, str) and not raw.strip():
        raw = None
    if raw is None:
        raise _Unstorable("property 'clue_id' is missing")
    value = _checked_text("clue_id", raw, None)
    assert value is not None
    return value


def _clue_from_feature(feature: Any, *, base_dir: Path | None, source: str | None) -> Clue:
    """Every field checked against what the ledger can store; :class:`_Unstorable` if not."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise _Unstorable("not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise _Unstorable("properties is not an object")
    clue_id = _clue_id(feature, props)
    raw_day = props.get("detected_at")
    try:
        if not isinstance(raw_day, str | dt.date):
            raise ValueError
        detected_on = dt.date.fromisoformat(str(raw_day)[:10])
    except ValueError:
        raise _Unstorable(f"detected_at is {raw_day!r}, not a date YYYY-MM-DD", clue_id) from None
    try:
        geometry = parse_geojson_geometry(feature.get("geometry"))
    except ValueError as exc:
        raise _Unstorable(str(exc), clue_id) from None
    confidence = _number(props, "confidence", clue_id, default=0.5)
    if not 0.0 <= confidence <= 1.0:
        raise _Unstorable(f"confidence {confidence} is outside 0-1", clue_id)
    priority = _checked_text("priority", props.get("priority"), clue_id) or "normal"
    if priority not in PRIORITY_RANK:
        raise _Unstorable(
            f"priority {priority!r} is not one of {', '.join(PRIORITY_RANK)}", clue_id
        )
    alert_status = _checked_text("alert_status", props.get("alert_status"), clue_id)
    if alert_status not in ALERT_STATUSES:
        raise _Unstorable(
            f"alert_status {alert_status!r} is not one of "
            f"{', '.join(s for s in ALERT_STATUSES if s)}",
            clue_id,
        )

    def text(key: str) -> str | None:
        return _checked_text(key, props.get(key), clue_id)

    return Clue(
        clue_id=clue_id,
        aoi=text("aoi"),
        detected_on=detected_on,
        geometry=geometry,
        area_m2=_number(props, "area_m2", clue_id, default=0.0),
        change_type=text("change_type") or "other",
        confidence=confidence,
        confidence_level=text("confidence_level"),
        zone=text("zone"),
        zone_tier=text("zone_tier"),
        county=text("county"),
        priority=priority,
        chip_before=_resolve(text("chip_before"), base_dir),
        chip_after=_resolve(text("chip_after"), base_dir),
        chip_change=_resolve(text("chip_change"), base_dir),
        source=source,
        alert_status=alert_status,
        properties=dict(props),
    )


def _checked_clue(clue: Clue) -> Clue:
    """A :class:`Clue` built in code gets the checks a Feature gets."""
    for key in CLUE_TEXT_COLUMNS:
        value = getattr(clue, key)
        if value is not None:
            _checked_text(key, value, clue.clue_id)
    problem = wgs84_problem(clue.geometry) or antimeridian_problem(clue.geometry)
    if problem:
        raise _Unstorable(problem, clue.clue_id)
    if not geodesic_area_m2(clue.geometry) > 0.0:
        raise _Unstorable("geometry has no polygon area", clue.clue_id)
    return clue


def parse_feature(
    feature: Mapping[str, Any],
    *,
    index: int = 0,
    base_dir: Path | None = None,
    source: str | None = None,
) -> Clue:
    """One GeoJSON Feature of ``clues.geojson`` → :class:`Clue` (raises :class:`ClueFormatError`)."""
    try:
        return _clue_from_feature(feature, base_dir=base_dir, source=source)
    except _Unstorable as exc:
        where = f"clue {exc.clue_id}" if exc.clue_id else f"feature #{index}"
        raise ClueFormatError(f"{source or 'clues'} {where}: {exc.reason}") from None


def _patch_clue_feature(clue: PatchClue) -> dict[str, Any]:
    try:
        geometry = to_geojson(polygonal(clue.geometry_wgs84))
    except Exception as exc:  # GEOS refuses what cannot be a geometry (NaN coordinates ...)
        raise _Unstorable(f"geometry cannot be read: {exc}", clue.clue_id) from None
    return {"type": "Feature", "geometry": geometry, "properties": clue.properties()}


def from_patch_clue(
    clue: PatchClue, *, base_dir: Path | None = None, source: str | None = None
) -> Clue:
    """A pipeline :class:`~changedetect.models.PatchClue` → :class:`Clue`."""
    try:
        feature = _patch_clue_feature(clue)
    except _Unstorable as exc:
        raise ClueFormatError(f"{source or 'clues'} clue {exc.clue_id}: {exc.reason}") from None
    return parse_feature(feature, base_dir=base_dir, source=source)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClueFormatError(f"clues file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClueFormatError(f"clues file {path} is not readable JSON: {exc}") from None


def read_clue_batch(path: str | Path) -> ClueBatch:
    """A ``clues.geojson`` file sorted into storable clues and rejects (chip paths resolved
    against its folder). A file that is not a FeatureCollection raises :class:`ClueFormatError`."""
    path = Path(path)
    data = _read_json(path)
    return sort_clues(data, base_dir=path.resolve().parent, source=str(path.resolve()))


def read_clues_file(path: str | Path) -> list[Clue]:
    """All clues of a ``clues.geojson`` file; :class:`ClueFormatError` if any cannot be stored."""
    return read_clue_batch(path).strict()


def parse_clues(
    data: Any, *, base_dir: Path | None = None, source: str | None = None
) -> list[Clue]:
    """Clues from a FeatureCollection, or an iterable of Features / PatchClues / Clues;
    :class:`ClueFormatError` if any cannot be stored."""
    return sort_clues(data, base_dir=base_dir, source=source).strict()


def _fingerprint(item: Any) -> str:
    """What two copies of one clue must share to be the same clue: geometry and properties."""
    if isinstance(item, Mapping):
        content = {"geometry": item.get("geometry"), "properties": item.get("properties")}
    else:
        content = {"item": item}
    return json.dumps(content, sort_keys=True, default=repr)


def sort_clues(data: Any, *, base_dir: Path | None = None, source: str | None = None) -> ClueBatch:
    """Clues from a FeatureCollection, or an iterable of Features / PatchClues / Clues, sorted
    into those the ledger can store and those set aside, each with its reason.

    Two items with one ``clue_id`` but different geometry or properties are both set aside:
    which of them is the clue cannot be known. Identical copies are kept (stored once).
    """
    from_collection = isinstance(data, Mapping)
    if from_collection:
        if data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
            raise ClueFormatError(
                f"{source or 'clues'} is not a GeoJSON FeatureCollection with a 'features' list"
            )
        data = data["features"]
    accepted: list[tuple[int, Any, Clue]] = []
    rejected: list[RejectedClue] = []
    for index, item in enumerate(data):
        original: Any = item
        try:
            if isinstance(item, Clue):
                original = {
                    "type": "Feature",
                    "geometry": to_geojson(item.geometry),
                    "properties": item.properties,
                }
                clue = _checked_clue(item)
            elif isinstance(item, Mapping) or from_collection:
                clue = _clue_from_feature(item, base_dir=base_dir, source=source)
            else:
                from ..models import PatchClue

                if not isinstance(item, PatchClue):
                    raise ClueFormatError(
                        f"{source or 'clues'} item #{index} is a {type(item).__name__}, "
                        "not a GeoJSON Feature, PatchClue or Clue"
                    )
                original = _patch_clue_feature(item)
                clue = _clue_from_feature(original, base_dir=base_dir, source=source)
        except _Unstorable as exc:
            rejected.append(RejectedClue(index, exc.clue_id, exc.reason, original))
            continue
        accepted.append((index, original, clue))

    copies: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for index, original, clue in accepted:
        copies[clue.clue_id].append((index, original))
    for reject in rejected:
        if reject.clue_id is not None:
            copies[reject.clue_id].append((reject.index, reject.item))
    conflicting = {
        clue_id: sorted(i for i, _ in group)
        for clue_id, group in copies.items()
        # a clue_id given once cannot conflict: only repeated ones are compared
        if len(group) > 1 and len({_fingerprint(original) for _, original in group}) > 1
    }
    clues = []
    for index, original, clue in accepted:
        if clue.clue_id in conflicting:
            where = ", ".join(f"#{i}" for i in conflicting[clue.clue_id])
            reason = (
                f"clue_id {clue.clue_id!r} is given {len(conflicting[clue.clue_id])} times with "
                f"different geometry or properties (features {where}): which one is the clue "
                "cannot be told"
            )
            rejected.append(RejectedClue(index, clue.clue_id, reason, original))
        else:
            clues.append(clue)
    rejected.sort(key=lambda r: r.index)
    return ClueBatch(clues, rejected, source)


def load_clues(clues: ClueInput, *, source: str | Path | None = None) -> ClueBatch:
    """Whatever :func:`ingest` was given → its :class:`ClueBatch` (source: path or label)."""
    if isinstance(clues, ClueBatch):
        return clues
    if isinstance(clues, str | Path):
        return read_clue_batch(clues)
    label = str(Path(source).resolve()) if isinstance(source, Path) else source
    base_dir = Path(label).parent if label and label.endswith(".geojson") else None
    return sort_clues(clues, base_dir=base_dir, source=label)
