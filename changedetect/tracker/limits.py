"""What the ledger's text columns can hold, checked before a clue reaches the database.

PostgreSQL refuses a value longer than its ``varchar(n)`` or holding a NUL, and fails the whole
transaction with it; SQLite stores either silently, and both fail on text that is not valid
Unicode. A clue is checked against the columns it will be stored in, with the lengths read from
the models, so a migration that widens a column widens the check with it.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from sqlalchemy import Column

from .models import Case, Detection

_cases, _detections = Case.__table__.c, Detection.__table__.c

#: The columns each text field of a clue is stored in (a field may be copied to several).
CLUE_TEXT_COLUMNS: dict[str, tuple[Column, ...]] = {
    "clue_id": (_detections.clue_id,),
    "aoi": (_cases.aoi,),
    "change_type": (_cases.change_type, _detections.change_type),
    "confidence_level": (_cases.confidence_level,),
    "zone": (_cases.zone,),
    "zone_tier": (_cases.zone_tier,),
    "county": (_cases.county, _cases.assigned_county),
    "priority": (_cases.clue_priority, _cases.priority),
    "chip_before": (_detections.chip_before,),
    "chip_after": (_detections.chip_after,),
}


@cache  # the columns are fixed: every clue asks about the same few fields
def max_length(field: str) -> int | None:
    """The most characters the ledger keeps for ``field`` (None: no limit)."""
    lengths = [
        length
        for column in CLUE_TEXT_COLUMNS.get(field, ())
        if (length := getattr(column.type, "length", None)) is not None
    ]
    return min(lengths) if lengths else None


def text_problem(field: str, value: str) -> str | None:
    """Why ``value`` cannot be stored as the clue's ``field``, or None."""
    limit = max_length(field)
    if limit is not None and len(value) > limit:
        return f"{field} is {len(value)} characters long; the ledger keeps at most {limit}"
    if value.isascii() and value.isprintable():
        return None  # printable ASCII holds neither control characters nor surrogates
    for position, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            name = "NUL" if char == "\x00" else unicodedata.name(char, "control character")
            return (
                f"{field} holds a control character (U+{ord(char):04X} {name}) "
                f"at position {position}"
            )
        if "\ud800" <= char <= "\udfff":
            return f"{field} is not valid Unicode text (a lone surrogate at position {position})"
    return None
