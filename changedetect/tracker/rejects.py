"""The rejects file: clues set aside by an ingest, kept beside their input for people to fix.

``clues.geojson`` → ``clues.rejects.geojson``: a FeatureCollection of the rejected Features as
they were given, each with one more property, ``reject_reason``. What JSON cannot hold is
written so that the file stays valid JSON for any reader: a non-finite number becomes its name
(``"NaN"``, ``"Infinity"``), and a geometry holding one is moved to the ``geometry_as_given``
property (the Feature's geometry is then null, which GIS tools accept).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path
from .clues import RejectedClue

#: The property that carries why a clue was set aside.
REASON_PROPERTY = "reject_reason"


def default_rejects_path(clues_path: str | Path) -> Path:
    """Where the rejects of ``clues_path`` go by default: ``<name>.rejects.geojson`` beside it."""
    path = Path(clues_path)
    stem = path.name.removesuffix(".geojson").removesuffix(".json")
    return path.with_name(f"{stem}.rejects.geojson")


def _json_safe(value: Any) -> tuple[Any, bool]:
    """``value`` with non-finite numbers spelled as strings; whether any was."""
    if isinstance(value, float) and not math.isfinite(value):
        return ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")), True
    if isinstance(value, Mapping):
        pairs = [(str(k), _json_safe(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, any(changed for _, (_, changed) in pairs)
    if isinstance(value, list | tuple):
        items = [_json_safe(v) for v in value]
        return [v for v, _ in items], any(changed for _, changed in items)
    if value is None or isinstance(value, str | int | float | bool):
        return value, False
    return repr(value), True


def rejected_feature(reject: RejectedClue) -> dict[str, Any]:
    """The rejected item as a GeoJSON Feature carrying its ``reject_reason``."""
    item = reject.item
    if isinstance(item, Mapping) and item.get("type") == "Feature":
        feature = dict(item)
        given = item.get("properties")
        properties = dict(given) if isinstance(given, Mapping) else {}
        if given is not None and not isinstance(given, Mapping):
            properties["properties_as_given"] = given
    else:  # not a Feature at all: kept whole, under a property
        feature = {"type": "Feature", "geometry": None}
        properties = {"item_as_given": item}
    properties[REASON_PROPERTY] = reject.reason
    geometry, unusable = _json_safe(feature.get("geometry"))
    if unusable:
        properties["geometry_as_given"] = geometry
        geometry = None
    feature["geometry"] = geometry
    feature["properties"] = properties
    safe, _ = _json_safe(feature)
    return safe


def write_rejects(path: str | Path, rejected: Sequence[RejectedClue]) -> Path | None:
    """Write the rejects file at ``path``; the path, or None when there were no rejects.

    With no rejects, a rejects file left at ``path`` by an earlier ingest of the same input is
    removed: it would otherwise be read as today's.
    """
    path = Path(path)
    if not rejected:
        path.unlink(missing_ok=True)
        return None
    collection = {
        "type": "FeatureCollection",
        "features": [rejected_feature(r) for r in rejected],
    }
    try:
        text = json.dumps(collection, ensure_ascii=False, indent=1, allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (one of the reasons to reject): escape it
        text = json.dumps(collection, ensure_ascii=True, indent=1, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path
