"""Alert state of a suspect change across nights: probable, then confirmed or dropped.

A change seen on one clear observation is *probable*: a cloud edge, a wet field or a shadow can
look like one. It is *confirmed* once later clear observations show it again (``confirm_after``
of them, 2 by default), as the operational alert systems do (GLAD-S2, RADD, OPERA DIST-ALERT), and
*dropped* when the next clear observation shows the ground as it was. A dropped alert stays in the
record. A night whose imagery does not see the site (cloud, no data) changes nothing.

Pure: the caller says, for each alert no clue of the night matched, what the night's imagery
shows there (:data:`Observation`). Re-running a night changes nothing it has already counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from ..evaluation import footprints_match

AlertStatus = Literal["probable", "confirmed", "dropped"]
Observation = Literal["changed", "unchanged", "unobserved"]

#: Later clear observations that must show a change again before it is confirmed.
DEFAULT_CONFIRM_AFTER = 2


@dataclass(frozen=True)
class Alert:
    """One suspect change followed across nights."""

    alert_id: str
    footprint: BaseGeometry
    """Union of the footprints of the clues that showed it (WGS84)."""
    status: AlertStatus
    first_detected: str
    """Night (ISO date of the newest acquisition analysed) it was first seen."""
    last_detected: str
    supporting: int
    """Clear observations that showed the change, the first one included."""
    nights: tuple[str, ...]
    """Every night that showed it: a night counts once, however often it is re-run."""
    change_type: str
    clue_id: str
    """The latest clue that showed it."""
    dropped_on: str | None = None

    @property
    def active(self) -> bool:
        return self.status != "dropped"


class ClueLike(Protocol):
    """What the alert state reads of a clue (changedetect.models.PatchClue has all of it)."""

    @property
    def clue_id(self) -> str: ...

    @property
    def geometry_wgs84(self) -> BaseGeometry: ...

    @property
    def change_type(self) -> str: ...


def _new_id(clue_id: str) -> str:
    return "alert-" + hashlib.sha1(clue_id.encode()).hexdigest()[:12]


def advance(
    alerts: Sequence[Alert],
    night: str,
    clues: Sequence[ClueLike],
    observe: Callable[[Alert], Observation],
    *,
    confirm_after: int = DEFAULT_CONFIRM_AFTER,
) -> tuple[list[Alert], dict[str, Alert]]:
    """The alerts after `night`, and the alert each of the night's clues belongs to (by clue id).

    A clue that overlaps an active alert continues it (the oldest, when several do); any other
    clue opens a probable alert. An active alert no clue continued is asked `observe`: a probable
    one the night sees "unchanged" is dropped; a confirmed one stays confirmed (what happens to a
    confirmed site is the case tracker's business).
    """
    if confirm_after < 1:
        raise ValueError(f"confirm_after must be >= 1, got {confirm_after}")
    updated = list(alerts)
    active = [i for i, a in enumerate(updated) if a.active]
    tree = STRtree([updated[i].footprint for i in active]) if active else None
    continued: set[int] = set()
    index_of_clue: dict[str, int] = {}
    for clue in clues:
        candidates = []
        if tree is not None:
            for k in tree.query(clue.geometry_wgs84):
                i = active[int(k)]
                # the same overlap rule that matches clues to known changes in evaluation
                if footprints_match(updated[i].footprint, clue.geometry_wgs84):
                    candidates.append(i)
        if not candidates:
            alert_id = _new_id(clue.clue_id)
            known = [j for j, a in enumerate(updated) if a.alert_id == alert_id]
            if known:  # the same night re-run: same clue ids, so the same new alerts
                index_of_clue[clue.clue_id] = known[0]
                continue
            updated.append(
                Alert(
                    alert_id=alert_id,
                    footprint=clue.geometry_wgs84,
                    status="probable",
                    first_detected=night,
                    last_detected=night,
                    supporting=1,
                    nights=(night,),
                    change_type=clue.change_type,
                    clue_id=clue.clue_id,
                )
            )
            index_of_clue[clue.clue_id] = len(updated) - 1
            continue
        i = min(candidates, key=lambda j: (updated[j].first_detected, updated[j].alert_id))
        continued.add(i)
        index_of_clue[clue.clue_id] = i
        alert = updated[i]
        if not alert.footprint.covers(clue.geometry_wgs84):
            alert = replace(alert, footprint=alert.footprint.union(clue.geometry_wgs84))
        if night not in alert.nights:
            supporting = alert.supporting + 1
            alert = replace(
                alert,
                status="confirmed" if supporting - 1 >= confirm_after else alert.status,
                last_detected=max(alert.last_detected, night),
                supporting=supporting,
                nights=(*alert.nights, night),
                change_type=clue.change_type,
                clue_id=clue.clue_id,
            )
        updated[i] = alert
    for i in active:
        alert = updated[i]
        if i in continued or night in alert.nights or alert.status != "probable":
            continue
        if observe(alert) == "unchanged":
            updated[i] = replace(alert, status="dropped", dropped_on=night)
    return updated, {cid: updated[i] for cid, i in index_of_clue.items()}
