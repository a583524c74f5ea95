"""`report.html`: one self-contained page per AOI run, for the analyst who triages it in the morning.

The page makes no request of any kind: CSS is inline, images are PNG `data:` URIs, and a
Content-Security-Policy forbids anything else, so it can be mailed, archived or opened on an
offline laptop and always shows the same thing. Its one script (templates/report.js, inline) is
allowed by its SHA-256 alone. It holds:

- a header: AOI, before/after windows, detection date, clue counts, run information;
- an overview of the AOI (overview.py) with every clue outlined and numbered 1..n in review order;
  each number links to its card;
- summary tables by change type, protection zone (and tier), county and priority;
- a table of every clue, which the script lets the analyst sort by any column and filter by
  change type, zone, county and priority, then one card per clue with its facts, the
  before/after chips and the NDVI-change chip; the cards follow the filter. Without the script the page shows
  every clue in review order.

This module prepares the values (numbers formatted, dashes for what is missing); the jinja2
templates in templates/ lay them out and escape every one, so a zone or county name can hold any
character.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import numbers
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from odc.geo.geobox import GeoBox

from ... import __version__
from ...errors import SinkError
from ...models import Patch, PatchClue, TimeWindow
from ...navigation import navigation
from ...types import CHANGE_TYPES
from ..atomic import atomic_path
from ..zones import ProtectionZone
from .chips import distance_label, png_workers
from .overview import Overview, render_overview
from .palette import png_data_uri
from .report_chips import CardChips

__all__ = ["write_report"]

_PRIORITIES = ("urgent", "high", "normal", "low")
_DASH = "\u2014"
_OUTSIDE_ZONES = "outside protected zones"
_UNKNOWN_COUNTY = "unknown county"
#: The template of the page's one script, which the policy allows by its hash.
_SCRIPT = "report.js"
#: Cards whose chips are being encoded ahead of the one being written: enough to keep every
#: encoding thread busy while the page is written, few enough that the report's memory does not
#: grow with the number of clues (a card's three chips are some tens of kB of text).
CARDS_AHEAD = 32


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("changedetect.io.sinks", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _content_security_policy(script: str | None) -> str:
    """The page's policy: data: images, inline styles, and `script` (the exact text of the one
    inline script, None for none) allowed by its SHA-256; nothing else, and no request at all."""
    scripts = ""
    if script is not None:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
        scripts = f"script-src 'sha256-{digest}'; "
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"{scripts}base-uri 'none'; form-action 'none'"
    )


# ----------------------------------------------------------------------------------------- text


def _finite(value: Any) -> bool:
    # numbers.Real covers numpy scalars too (np.float32 is no Python float)
    return isinstance(value, numbers.Real) and math.isfinite(value)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if _finite(value) else _DASH


def _sort_value(value: Any) -> str:
    """A number as the script parses it; empty for a missing one (it sorts below all numbers)."""
    return repr(float(value)) if _finite(value) else ""


def _window_text(window: TimeWindow | Sequence[str] | None) -> str:
    if window is None:
        return _DASH
    if isinstance(window, TimeWindow):
        return f"{window.start.isoformat()} \u2013 {window.end.isoformat()}"
    parts = [str(p) for p in window]
    return " \u2013 ".join(parts) if parts else _DASH


def _info_value(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return format(value, ".4g")
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_info_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_info_value(v) for v in value)
    return str(value)


def _known(value: str | None, allowed: Sequence[str], fallback: str) -> str:
    """A CSS class suffix from a clue value, only from a fixed list (never clue text in a class)."""
    return value if value is not None and value in allowed else fallback


def _ha(area_m2: float) -> str:
    return _fmt(area_m2 / 1e4, ",.2f") if _finite(area_m2) else _DASH


def _lat_lon(lon: float, lat: float) -> str:
    return f"{_fmt(lat, '.5f')}, {_fmt(lon, '.5f')}"


# ---------------------------------------------------------------------------------------- header


@dataclass(frozen=True)
class _Header:
    title: str
    aoi: str
    before: str
    after: str
    detected: str
    by_priority: str
    """e.g. "1 urgent · 2 high"; empty without clues."""
    run_info: list[tuple[str, str]]


def _header(
    title: str,
    aoi: str,
    clues: Sequence[PatchClue],
    before: TimeWindow | Sequence[str] | None,
    after: TimeWindow | Sequence[str] | None,
    detected_at: str | None,
    run_info: Mapping[str, Any] | None,
) -> _Header:
    if before is None and clues:
        before = clues[0].before
    if after is None and clues:
        after = clues[0].after
    if detected_at is None and clues:
        detected_at = max(str(c.detected_at) for c in clues)
    by_priority = {p: 0 for p in _PRIORITIES}
    for clue in clues:
        by_priority[str(clue.priority)] = by_priority.get(str(clue.priority), 0) + 1
    return _Header(
        title=title,
        aoi=aoi,
        before=_window_text(before),
        after=_window_text(after),
        detected=detected_at or _DASH,
        by_priority=" \u00b7 ".join(f"{n} {p}" for p, n in by_priority.items() if n),
        run_info=[(str(k), _info_value(v)) for k, v in (run_info or {}).items()],
    )


# -------------------------------------------------------------------------------------- overview


@dataclass(frozen=True)
class _Hit:
    """A transparent link over a clue's outline, in percent so it follows the picture's size."""

    number: int
    left: str
    top: str
    width: str
    height: str


@dataclass(frozen=True)
class _OverviewFigure:
    image: str
    width: int
    height: int
    hits: list[_Hit]
    after: str
    zones: int
    scale_bar: str | None
    north_west: str
    south_east: str


def _overview_figure(overview: Overview, png_uri: str, after_text: str) -> _OverviewFigure:
    width, height = overview.image.size
    pad = 4.0
    hits = []
    for number, (x0, y0, x1, y1) in enumerate(overview.boxes, start=1):
        left, top = max(x0 - pad, 0.0), max(y0 - pad, 0.0)
        right, bottom = min(x1 + pad, width), min(y1 + pad, height)
        hits.append(
            _Hit(
                number,
                f"{left / width * 100:.3f}",
                f"{top / height * 100:.3f}",
                f"{(right - left) / width * 100:.3f}",
                f"{(bottom - top) / height * 100:.3f}",
            )
        )
    bar = overview.scale_bar_m
    return _OverviewFigure(
        image=png_uri,
        width=width,
        height=height,
        hits=hits,
        after=after_text,
        zones=overview.zones,
        scale_bar=distance_label(bar) if bar else None,
        north_west=_lat_lon(*overview.corners[0]),
        south_east=_lat_lon(*overview.corners[1]),
    )


# --------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class _SummaryRow:
    label: str
    tier: str
    count: int
    area: str


@dataclass(frozen=True)
class _SummaryTable:
    id: str
    caption: str
    head: str
    tiered: bool
    rows: list[_SummaryRow]
    total_count: int
    total_area: str


Group = tuple[str, str | None, int, float]  # label, tier, count, area m²


def _group(
    clues: Sequence[PatchClue], key: Callable[[PatchClue], tuple[str, str | None]]
) -> list[Group]:
    counts: dict[tuple[str, str | None], list[float]] = {}
    for clue in clues:
        entry = counts.setdefault(key(clue), [0, 0.0])
        entry[0] += 1
        entry[1] += clue.area_m2 if _finite(clue.area_m2) else 0.0
    groups = [(label, tier, int(n), area) for (label, tier), (n, area) in counts.items()]
    # the most affected first; names break ties so the page is the same for the same clues
    return sorted(groups, key=lambda g: (-g[2], g[0], g[1] or ""))


def _in_order(
    clues: Sequence[PatchClue], key: Callable[[PatchClue], str], order: Sequence[str]
) -> list[Group]:
    """Groups for every value of a fixed vocabulary, zeros included ("0 quarry" is news too), in
    its own order, then any value outside it."""
    groups = {g[0]: g for g in _group(clues, lambda c: (key(c), None))}
    labels = [*order, *sorted(set(groups) - set(order))]
    return [groups.get(label, (label, None, 0, 0.0)) for label in labels]


def _zone_key(clue: PatchClue) -> tuple[str, str | None]:
    if clue.zone is None:
        return (_OUTSIDE_ZONES, None)
    return (str(clue.zone), None if clue.zone_tier is None else str(clue.zone_tier))


def _county_key(clue: PatchClue) -> tuple[str, str | None]:
    return (_UNKNOWN_COUNTY if clue.county is None else str(clue.county), None)


def _table(
    table_id: str, caption: str, head: str, groups: list[Group], tiered: bool
) -> _SummaryTable:
    return _SummaryTable(
        id=table_id,
        caption=caption,
        head=head,
        tiered=tiered,
        rows=[_SummaryRow(label, tier or _DASH, n, _ha(area)) for label, tier, n, area in groups],
        total_count=sum(g[2] for g in groups),
        total_area=_ha(sum(g[3] for g in groups)),
    )


def _summary(clues: Sequence[PatchClue]) -> list[_SummaryTable]:
    by_type = _in_order(clues, lambda c: str(c.change_type), CHANGE_TYPES)
    by_priority = _in_order(clues, lambda c: str(c.priority), _PRIORITIES)
    return [
        _table("by-type", "by change type", "change type", by_type, False),
        _table("by-zone", "by protection zone", "zone", _group(clues, _zone_key), True),
        _table("by-county", "by county", "county", _group(clues, _county_key), False),
        _table("by-priority", "by priority", "priority", by_priority, False),
    ]


# ----------------------------------------------------------------------------------------- clues


@dataclass(frozen=True)
class _ClueView:
    """One clue as its index row and its card show it; `*_value` are what its row sorts by and
    `*_filter` what the filters match it on."""

    number: int
    clue_id: str
    change_type: str
    type_class: str
    priority: str
    priority_class: str
    priority_rank: int
    confidence: str
    confidence_level: str
    confidence_value: str
    area: str
    area_ha: str
    area_value: str
    zone: str
    zone_in_full: str
    tier: str | None
    zone_value: str
    zone_filter: str
    county: str
    county_value: str
    county_filter: str
    centroid: str
    centroid_gcj02: str
    navigation: list[tuple[str, str]]
    index_changes: str
    status: str
    before: str
    after: str
    before_chip: str
    after_chip: str
    change_chip: str


def _priority_rank(priority: str) -> int:
    return _PRIORITIES.index(priority) if priority in _PRIORITIES else len(_PRIORITIES)


def _clue_view(
    number: int, clue: PatchClue, chips: tuple[str, str, str] = ("", "", "")
) -> _ClueView:
    """The clue's row and card; without `chips` its card is not ready (see _Cards)."""
    lon, lat = clue.centroid
    nav = navigation(lon, lat, clue.area_m2, clue.clue_id)
    gcj_lon, gcj_lat = nav["centroid_gcj02"]  # type: ignore[misc]
    priority, change_type = str(clue.priority), str(clue.change_type)
    zone = None if clue.zone is None else str(clue.zone)
    county = None if clue.county is None else str(clue.county)
    return _ClueView(
        number=number,
        clue_id=str(clue.clue_id),
        change_type=change_type,
        type_class=_known(change_type, CHANGE_TYPES, "other"),
        priority=priority,
        priority_class=_known(priority, _PRIORITIES, "other"),
        priority_rank=_priority_rank(priority),
        confidence=_fmt(clue.confidence, ".2f"),
        confidence_level=str(clue.confidence_level),
        confidence_value=_sort_value(clue.confidence),
        area=(
            f"{_fmt(clue.area_m2, ',.0f')} m\u00b2 ({_ha(clue.area_m2)} ha, "
            f"{_fmt(nav['area_mu'], ',.1f')} \u4ea9)"
        ),
        area_ha=_ha(clue.area_m2),
        area_value=_sort_value(clue.area_m2),
        zone=zone or _DASH,
        zone_in_full=zone or _OUTSIDE_ZONES,
        tier=None if not clue.zone_tier else str(clue.zone_tier),
        zone_value=zone or "",
        zone_filter=_zone_key(clue)[0],
        county=county or _DASH,
        county_value=county or "",
        county_filter=_county_key(clue)[0],
        centroid=_lat_lon(lon, lat),
        centroid_gcj02=_lat_lon(gcj_lon, gcj_lat),
        navigation=[
            (label, str(nav[key]))
            for key, label in (("link_amap", "Amap"), ("link_baidu", "Baidu"), ("link_geo", "geo:"))
        ],
        index_changes=(
            f"NDVI {_fmt(clue.d_ndvi, '+.3f')} \u00b7 BSI {_fmt(clue.d_bsi, '+.3f')} "
            f"\u00b7 NDBI {_fmt(clue.d_ndbi, '+.3f')}"
        ),
        status=str(clue.status),
        before=_window_text(clue.before),
        after=_window_text(clue.after),
        before_chip=chips[0],
        after_chip=chips[1],
        change_chip=chips[2],
    )


@dataclass(frozen=True)
class _Filter:
    key: str
    """The row attribute it matches (data-<key>)."""
    label: str
    options: list[str]


def _filters(views: Sequence[_ClueView]) -> list[_Filter]:
    """One select per facet, offering only the values present: vocabularies in their own order,
    names alphabetically with "outside"/"unknown" last."""

    def vocabulary(values: set[str], order: Sequence[str]) -> list[str]:
        return [v for v in order if v in values] + sorted(values - set(order))

    def names(values: set[str], missing: str) -> list[str]:
        return sorted(values - {missing}, key=str.casefold) + (
            [missing] if missing in values else []
        )

    return [
        _Filter("type", "change type", vocabulary({v.change_type for v in views}, CHANGE_TYPES)),
        _Filter("zone", "zone", names({v.zone_filter for v in views}, _OUTSIDE_ZONES)),
        _Filter("county", "county", names({v.county_filter for v in views}, _UNKNOWN_COUNTY)),
        _Filter("priority", "priority", vocabulary({v.priority for v in views}, _PRIORITIES)),
    ]


class _Cards:
    """The cards of the page in order, each with its chips, encoded on `pool` only a bounded
    number of cards ahead of the one the template is writing: a report of any number of clues
    holds the chips of at most `ahead` + 1 cards. Encoding starts when this is made, so it
    overlaps the writing of everything above the cards. Iterate once; `cancel` drops the work
    not yet started (the page failed)."""

    def __init__(
        self,
        views: Sequence[_ClueView],
        clues: Sequence[PatchClue],
        patches: Sequence[Patch],
        chips: CardChips,
        pool: ThreadPoolExecutor,
        ahead: int,
    ) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self._views = views
        self._work = zip(clues, patches, strict=True)
        self._chips = chips
        self._pool = pool
        self._pending: deque[Future[tuple[str, str, str]]] = deque()
        for _ in range(ahead):
            self._submit()

    def _submit(self) -> None:
        job = next(self._work, None)
        if job is not None:
            self._pending.append(self._pool.submit(self._chips.uris, *job))

    def __iter__(self) -> Iterator[_ClueView]:
        for view in self._views:
            before, after, change = self._pending.popleft().result()
            self._submit()
            yield replace(view, before_chip=before, after_chip=after, change_chip=change)

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


def _review_order(clue: PatchClue, index: int) -> tuple[int, float, int]:
    confidence = clue.confidence if math.isfinite(clue.confidence) else 0.0
    return _priority_rank(str(clue.priority)), -confidence, index


# ------------------------------------------------------------------------------------------ page


def write_report(
    out_path: Path,
    *,
    aoi: str,
    clues: Sequence[PatchClue],
    patches: Sequence[Patch],
    grid: GeoBox,
    rgb_path: Path,
    chip_dir: Path | None = None,
    title: str | None = None,
    run_info: Mapping[str, Any] | None = None,
    before: TimeWindow | Sequence[str] | None = None,
    after: TimeWindow | Sequence[str] | None = None,
    detected_at: str | None = None,
    max_overview_px: int = 1600,
    chip_px: int = 128,
    zones: Sequence[ProtectionZone] = (),
) -> Path:
    """Write the self-contained `report.html` of one AOI run to `out_path` (atomically).

    `clues` and `patches` are parallel (clue i was made from patch i, as the pipeline builds
    them); clues are numbered 1..n on the overview, the table and the cards in the order a
    morning's review takes them: by priority (urgent first), then by confidence (highest first).
    `rgb_path` is the run's preview raster on `grid` (bands 1-3 before RGB, 4-6 after). Chips are
    taken from `chip_dir` (the file named by `chip_before`/`chip_after`/`chip_change`, or
    `<clue_id>_{before,after,change}.png`) and, where missing, cut from `rgb_path` (`chip_px` a
    side, framed as chips.py frames them). `before`, `after` and
    `detected_at` fill the header when there are no clues to take them from. `run_info` is shown
    as a key/value table (timings, source, ...). `zones` are drawn on the overview. Returns
    `out_path`.

    The page is written to the file as it renders, each card's chips made a few dozen cards
    ahead of it: the memory this takes does not grow with the number of clues (beyond a few kB
    of text per clue for the index).
    """
    if len(clues) != len(patches):
        raise ValueError(f"{len(clues)} clues but {len(patches)} patches: they must be parallel")
    if max_overview_px < 64:
        raise ValueError(f"max_overview_px must be at least 64, got {max_overview_px}")
    if not Path(rgb_path).is_file():
        raise SinkError(
            f"cannot write {out_path}: the true-colour raster {rgb_path} does not exist; write "
            "the report while the run's work folder still holds rgb.tif"
        )
    title = title or f"Change report \u2014 {aoi}"
    order = sorted(range(len(clues)), key=lambda i: _review_order(clues[i], i))
    clues, patches = [clues[i] for i in order], [patches[i] for i in order]
    overview = render_overview(rgb_path, grid, patches, max_px=max_overview_px, zones=zones)
    # the index, the summary and the filters need every clue's text but none of its chips: the
    # rows are made now, each card's chips only as the page reaches it
    views = [_clue_view(number, clue) for number, clue in enumerate(clues, start=1)]
    after_text = _window_text(after if after is not None else (clues[0].after if clues else None))
    templates = _templates()
    # the policy at the top of the page carries the script's hash: it is known before the page
    # is written because the script does not depend on the clues
    script = templates.get_template(_SCRIPT).render() if views else None
    # decoding, quantising and encoding the chips (and the overview) is most of a large report's
    # time: done on threads (Pillow releases the GIL) a few dozen cards ahead of the page, which
    # is written as it is rendered, so neither the chips nor the page are ever held whole
    with (
        CardChips(chip_dir, rgb_path, grid, chip_px) as chips,
        ThreadPoolExecutor(png_workers(), "report-chips") as pool,
    ):
        overview_png = pool.submit(png_data_uri, overview.image)
        cards = _Cards(views, clues, patches, chips, pool, CARDS_AHEAD)
        try:
            stream = templates.get_template("report.html.j2").stream(
                csp=_content_security_policy(script),
                version=__version__,
                header=_header(title, aoi, clues, before, after, detected_at, run_info),
                overview=_overview_figure(overview, overview_png.result(), after_text),
                summary=_summary(clues),
                filters=_filters(views),
                clues=views,
                cards=cards,
            )
            with atomic_path(out_path) as tmp, tmp.open("w", encoding="utf-8") as out:
                stream.dump(out)
                out.write("\n")
        finally:
            # after a failure, do not wait for chips no page will show
            cards.cancel()
    return out_path
