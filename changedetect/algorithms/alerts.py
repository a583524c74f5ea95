"""Alert state of a suspect change across acquisitions: probable, then confirmed or dropped.

A change seen on one clear observation is *probable*: a cloud edge, a wet field or a shadow can
look like one. It is *confirmed* once later clear observations show it again (``confirm_after``
of them, 2 by default), as the operational alert systems do (GLAD-S2, RADD, OPERA DIST-ALERT), and
*dropped* when the newest clear observation shows the ground as it was while it is still
probable. A dropped alert stays in the record. An acquisition that does not see the site (cloud,
no data) changes nothing.

Observations are acquisitions, not nights: a night whose window holds three clear acquisitions of
a site counts three (:func:`site_sighting` judges each one). Pure: the caller says what each of
the night's acquisitions shows at each clue's site, and for each alert no clue of the night
matched, what the night's imagery shows there. Re-running a night changes nothing it has already
counted: each acquisition date counts once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from ..evaluation import footprints_match

AlertStatus = Literal["probable", "confirmed", "dropped"]
Observation = Literal["changed", "unchanged", "unobserved"]
#: What one acquisition showed at a site: (ISO date of the acquisition, what it showed).
Sighting = tuple[str, Observation]

#: Later clear observations that must show a change again before it is confirmed.
DEFAULT_CONFIRM_AFTER = 2
#: An acquisition sees a site when at least this share of its footprint has valid data: more of
#: it seen than hidden.
SEEN_SHARE = 0.5
#: Clear before-side acquisitions that must show a site as it is now for its change to be a
#: recurrence (a harvest, a season), not new: two, since haze or an unmasked cloud rim can make
#: one acquisition look like anything bright.
RECURRING_SIGHTINGS = 2
#: A clue shows an alert's site again when at least this share of the smaller of the two lies on
#: the other: most of it, so a clue at the rim of a large site (a strip of haze beside a forest
#: patch flagged the week before) is not the same ground. Evaluation's overlap rule is looser (a
#: tenth) because it only asks whether a clue points at a known change.
SAME_GROUND_SHARE = 0.5


@dataclass(frozen=True)
class Alert:
    """One suspect change followed across acquisitions."""

    alert_id: str
    footprint: BaseGeometry
    """Union of the footprints of the clues that showed it (WGS84)."""
    status: AlertStatus
    observed: tuple[str, ...]
    """Dates (ISO, ascending) of the clear acquisitions that showed the change: an acquisition
    counts once, however often it is re-run."""
    change_type: str
    clue_id: str
    """The latest clue that showed it."""
    dropped_on: str | None = None
    site: BaseGeometry | None = None
    """Footprint of the clue that opened it (WGS84; None: the footprint). Later clues continue the
    alert only when they lie on this (:data:`SAME_GROUND_SHARE`), not on the grown union:
    otherwise a chain of unrelated detections, each touching the last one's extent, adds up to a
    confirmed alert that no single piece of ground ever showed twice."""

    @property
    def where(self) -> BaseGeometry:
        """The ground later clues must overlap to continue the alert."""
        return self.site if self.site is not None else self.footprint

    @property
    def active(self) -> bool:
        return self.status != "dropped"

    @property
    def first_detected(self) -> str:
        """Date of the first clear acquisition that showed it."""
        return self.observed[0]

    @property
    def last_detected(self) -> str:
        return self.observed[-1]

    @property
    def supporting(self) -> int:
        """Clear observations that showed the change, the first one included."""
        return len(self.observed)


class ClueLike(Protocol):
    """What the alert state reads of a clue (changedetect.models.PatchClue has all of it)."""

    @property
    def clue_id(self) -> str: ...

    @property
    def geometry_wgs84(self) -> BaseGeometry: ...

    @property
    def change_type(self) -> str: ...


def site_sighting(
    before: np.ndarray, after: np.ndarray, observation: np.ndarray, valid: np.ndarray
) -> Observation:
    """What one acquisition shows at a site: nearer the after state than the before state?

    `before` and `after` are the two composites' reflectance over the site's pixels, `observation`
    the acquisition's (each bands x pixels), `valid` where the acquisition has clear data. The
    site is judged whole: the per-band medians over its clear pixels, the acquisition's against
    the two states' (Euclidean in reflectance); "changed" when it is nearer the after state.
    "unobserved" when clouds or no data hide most of the site.

    Whole, not pixel by pixel: a pixel of one acquisition carries its own noise, while a state
    taken over several acquisitions (a season's median) carries little, so pixel votes lean to
    whichever state is the median. A night's single acquisition as the after state made every
    before-side acquisition of a stable site vote "as before", and a stable old quarry flagged by
    a small calibration difference never showed as the recurrence it is. The medians over the
    site's pixels average that noise away on both sides.
    """
    n = before.shape[-1]
    seen = valid & np.isfinite(observation).all(0) & np.isfinite(before).all(0)
    seen &= np.isfinite(after).all(0)
    if n == 0 or np.count_nonzero(seen) < SEEN_SHARE * n:
        return "unobserved"
    x, b, a = (np.median(v[:, seen], axis=1) for v in (observation, before, after))
    return "changed" if ((x - a) ** 2).sum() < ((x - b) ** 2).sum() else "unchanged"


def _new_id(clue_id: str) -> str:
    return "alert-" + hashlib.sha1(clue_id.encode()).hexdigest()[:12]


def _count(alert: Alert, sightings: Sequence[Sighting], confirm_after: int) -> Alert:
    """`alert` after a clue's sightings (oldest first): each new clear acquisition that shows the
    change supports it; a probable alert whose newest clear acquisition shows the ground as before
    is dropped."""
    days = tuple(
        sorted(set(alert.observed) | {day for day, seen in sightings if seen == "changed"})
    )
    status = alert.status
    if status == "probable" and len(days) - 1 >= confirm_after:
        status = "confirmed"
    alert = replace(alert, status=status, observed=days)
    clear = [(day, seen) for day, seen in sorted(sightings) if seen != "unobserved"]
    if alert.status == "probable" and clear and clear[-1][1] == "unchanged":
        alert = replace(alert, status="dropped", dropped_on=clear[-1][0])
    return alert


def _continued_by(
    alerts: Sequence[Alert], tree: STRtree | None, footprint: BaseGeometry, tonight: set[str]
) -> list[int]:
    """Indices of the alerts a clue over `footprint` continues: active ones whose site it lies on
    (:data:`SAME_GROUND_SHARE`), and one dropped on a date of `tonight` (the night re-run)."""
    if tree is None:
        return []
    found = []
    for k in tree.query(footprint):
        alert = alerts[int(k)]
        if not (alert.active or alert.dropped_on in tonight):
            continue
        if footprints_match(alert.where, footprint, share=SAME_GROUND_SHARE):
            found.append(int(k))
    return found


def advance(
    alerts: Sequence[Alert],
    night: str,
    clues: Sequence[ClueLike],
    observe: Callable[[Alert], Observation],
    *,
    sightings: Mapping[str, Sequence[Sighting]] | None = None,
    confirm_after: int = DEFAULT_CONFIRM_AFTER,
) -> tuple[list[Alert], dict[str, Alert]]:
    """The alerts after `night`, and the alert each of the night's clues belongs to (by clue id).

    `sightings` gives, per clue id, what each of the night's acquisitions showed at the clue
    (:func:`site_sighting`); a clue without any sighting that shows it counts as seen once, on
    `night` (the composite saw it). A clue that lies on an active alert's site continues it (the
    oldest, when several do); any other clue opens a probable alert. An active alert no clue continued is
    asked `observe` what the night shows at its footprint: a probable one the night sees
    "unchanged" is dropped; a confirmed one stays confirmed (what happens to a confirmed site is
    the case tracker's business).
    """
    if confirm_after < 1:
        raise ValueError(f"confirm_after must be >= 1, got {confirm_after}")
    sightings = sightings or {}
    updated = list(alerts)
    active = [i for i, a in enumerate(updated) if a.active]
    tree = STRtree([a.where for a in updated]) if updated else None
    continued: set[int] = set()
    index_of_clue: dict[str, int] = {}
    for clue in clues:
        seen = list(sightings.get(clue.clue_id, ()))
        if not any(s == "changed" for _, s in seen):
            seen.append((night, "changed"))
        candidates = _continued_by(
            updated, tree, clue.geometry_wgs84, {d for d, _ in seen} | {night}
        )
        if not candidates:
            alert_id = _new_id(clue.clue_id)
            known = [j for j, a in enumerate(updated) if a.alert_id == alert_id]
            if known:  # the same night re-run: same clue ids, so the same new alerts
                index_of_clue[clue.clue_id] = known[0]
                continue
            opened = Alert(
                alert_id=alert_id,
                footprint=clue.geometry_wgs84,
                status="probable",
                observed=(),
                change_type=clue.change_type,
                clue_id=clue.clue_id,
                site=clue.geometry_wgs84,
            )
            updated.append(_count(opened, seen, confirm_after))
            index_of_clue[clue.clue_id] = len(updated) - 1
            continue
        i = min(candidates, key=lambda j: (updated[j].first_detected, updated[j].alert_id))
        continued.add(i)
        index_of_clue[clue.clue_id] = i
        alert = updated[i]
        if not alert.footprint.covers(clue.geometry_wgs84):
            alert = replace(alert, footprint=alert.footprint.union(clue.geometry_wgs84))
        counted = _count(alert, seen, confirm_after)
        if counted.observed != alert.observed:
            counted = replace(counted, change_type=clue.change_type, clue_id=clue.clue_id)
        updated[i] = counted
    for i in active:
        alert = updated[i]
        if i in continued or alert.status != "probable" or alert.last_detected >= night:
            continue
        if observe(alert) == "unchanged":
            updated[i] = replace(alert, status="dropped", dropped_on=night)
    return updated, {cid: updated[i] for cid, i in index_of_clue.items()}
