"""A case's dossier for the enforcement file: one self-contained HTML page (chips inline, no
script, no request), laid out to print on A4.

It holds what a file needs to stand on its own: the before/after chips of the latest detection
(and its NDVI-change chip where it has one), the place in WGS84 and in GCJ-02 (what Chinese map
apps show), the area in m², ha and 亩, zone, tier and counties, the detection and verification
dates, the officer's findings on site (the verdict, the note, where the officer stood in both
datums and how far that is from the patch, the phone's time and the server's, and the photos),
every detection, and the full event trail with actors and comments. Pure rendering: the caller
reads the case, the chip and photo files.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Mapping

from pyproj import Geod

from .. import __version__
from ..navigation import navigation, wgs84_to_gcj02
from .queries import CaseDetail, EventView, PhotoView
from .states import VERDICT_STATES

_GEOD = Geod(ellps="WGS84")

#: The page may show inline images and its own style, and nothing else.
DOSSIER_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'"

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#1d2733;max-width:190mm;margin:0 auto;padding:12px}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.2em 0 .4em;border-bottom:1px solid
#d5dde5}.sub{color:#5b6b7c;margin:0 0 .8em}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #e3e8ee;vertical-align:top}
th{color:#5b6b7c;font-weight:400;white-space:nowrap;width:1%}
.chips{display:flex;flex-direction:column;gap:6px}.chips img{width:100%;max-width:170mm;
image-rendering:pixelated;border:1px solid #d5dde5}figure{margin:0}figcaption{color:#5b6b7c}
.none{color:#5b6b7c;font-style:italic}
.finding{border:1px solid #d5dde5;padding:6px 8px;margin:0 0 10px;break-inside:avoid}
.finding h3{font-size:1em;margin:0 0 .3em}.photos{display:flex;flex-wrap:wrap;gap:6px}
.photos figure{flex:1 1 80mm;max-width:100%}.photos img{width:100%;height:auto;
border:1px solid #d5dde5}footer{margin-top:2em;color:#5b6b7c;font-size:.85em}
@page{size:A4;margin:12mm}@media print{body{padding:0}h2{break-after:avoid}tr,figure{break-inside:avoid}}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(value: dt.date | dt.datetime | None) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def _data_uri(image: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(image).decode('ascii')}"


def _photo_figure(photo: PhotoView, image: tuple[bytes, str] | None) -> str:
    said = [f"photo {photo.id}", photo.filename or "", f"{photo.width}×{photo.height}"]
    if photo.exif_taken_at:
        said.append(f"camera time {photo.exif_taken_at}")
    if photo.exif_lat is not None and photo.exif_lon is not None:
        said.append(f"camera GPS {photo.exif_lat:.6f}, {photo.exif_lon:.6f}")
    caption = " \u00b7 ".join(_e(part) for part in said if part)
    if image is None:
        return f"<p class='none'>{caption}: the file is missing from the photo store</p>"
    data, media_type = image
    return (
        f"<figure><img src='{_data_uri(data, media_type)}' alt='photo {photo.id} from the "
        f"field'><figcaption>{caption}</figcaption></figure>"
    )


def _finding(
    event: EventView,
    centroid: tuple[float, float],
    photos: Mapping[int, tuple[bytes, str] | None],
) -> str:
    """One field verdict: who, when, what they found, where they stood, what they saw."""
    facts = [
        ("verdict", event.to_state or ""),
        ("officer", event.actor),
        ("recorded (server time)", _when(event.at)),
        ("note", event.comment or "\u2014"),
    ]
    where = event.position
    if where is None:
        facts.append(("position", "not recorded (verdict given without a field record)"))
    else:
        gcj_lon, gcj_lat = wgs84_to_gcj02(where.lon, where.lat)
        _, _, metres = _GEOD.inv(centroid[0], centroid[1], where.lon, where.lat)
        if where.source == "manual":
            how = "typed in on site"
        elif where.accuracy_m is not None:
            how = f"phone location, ±{where.accuracy_m:.0f} m"
        else:
            how = "phone location"
        facts += [
            ("position, WGS84 (GPS)", f"{where.lat:.6f}, {where.lon:.6f} (lat, lon; {how})"),
            ("position, GCJ-02 (Amap, Tencent)", f"{gcj_lat:.6f}, {gcj_lon:.6f} (lat, lon)"),
            ("distance to the patch centre", f"{metres:,.0f} m"),
            ("position taken (phone clock)", _when(where.taken_at)),
        ]
    rows = "".join(f"<tr><th scope='row'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    figures = "".join(_photo_figure(p, photos.get(p.id)) for p in event.photos)
    shown = figures or "<p class='none'>no photos</p>"
    return (
        f"<section class='finding'><h3>{_e(event.to_state)} \u00b7 {_when(event.at)}</h3>"
        f"<table><tbody>{rows}</tbody></table><div class='photos'>{shown}</div></section>"
    )


def render_dossier(
    detail: CaseDetail,
    chips: Mapping[str, tuple[bytes, str]],
    *,
    now: dt.datetime,
    photos: Mapping[int, tuple[bytes, str] | None] | None = None,
) -> str:
    """The dossier of `detail` as HTML. `chips` maps ``before`` / ``after`` / ``change`` to the
    latest detection's chip (its bytes and media type), where there is one (a missing change
    chip is left out: runs before it did not draw one); `photos` maps the id of
    each field photo to the image to embed (None when its file is gone)."""
    case = detail.case
    lon, lat = case.centroid
    nav = navigation(lon, lat, case.area_m2, f"case {case.id}")
    gcj_lon, gcj_lat = nav["centroid_gcj02"]  # type: ignore[misc]
    facts = [
        ("state", case.state),
        ("change type", case.change_type),
        ("priority", case.priority + (" (escalated)" if case.escalated else "")),
        ("confidence", f"{case.confidence:.2f} ({case.confidence_level or 'n/a'})"),
        ("area", f"{case.area_m2:,.0f} m² · {nav['area_ha']} ha · {nav['area_mu']} 亩"),
        ("zone", f"{case.zone or 'outside protected zones'}"
         + (f" ({case.zone_tier})" if case.zone_tier else "")),
        ("county (clue / assigned)", f"{case.county or '—'} / {case.assigned_county or '—'}"),
        ("place, WGS84 (GPS)", f"{lat:.6f}, {lon:.6f} (lat, lon)"),
        ("place, GCJ-02 (Amap, Tencent)", f"{gcj_lat:.6f}, {gcj_lon:.6f} (lat, lon)"),
        ("first / last detected", f"{_when(case.first_detected_on)} / {_when(case.last_detected_on)}"),
        ("detections", str(case.detections)),
        ("verification deadline", _when(case.deadline) + (" (overdue)" if case.overdue else "")),
        ("verified", _when(case.verified_at)),
        ("closed", _when(case.closed_at)),
    ]  # fmt: skip
    if case.link_reason:
        facts.append(("linked to", f"case {case.linked_case_id} ({case.link_reason})"))
    if case.tags:
        facts.append(("tags", ", ".join(case.tags)))
    rows = "".join(f"<tr><th scope='row'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    figures = []
    for which in ("before", "after"):
        if which in chips:
            data, media_type = chips[which]
            figures.append(
                f"<figure><img src='{_data_uri(data, media_type)}' alt='{which} chip'>"
                f"<figcaption>{which} \u00b7 true colour | false colour (SWIR-NIR-red)"
                "</figcaption></figure>"
            )
        else:
            figures.append(f"<p class='none'>no {which} chip on record</p>")
    if "change" in chips:
        data, media_type = chips["change"]
        figures.append(
            f"<figure><img src='{_data_uri(data, media_type)}' alt='NDVI change chip'>"
            "<figcaption>NDVI change, after \u2212 before \u00b7 brown: vegetation lost, "
            "green: gained (the same scale on every case)</figcaption></figure>"
        )
    detections = "".join(
        f"<tr><td>{_when(d.detected_on)}</td><td>{_e(d.clue_id)}</td><td>{_e(d.change_type)}</td>"
        f"<td>{d.area_m2:,.0f} m²</td><td>{d.confidence:.2f}</td>"
        f"<td>{'suppressed' if d.suppressed else ''}</td></tr>"
        for d in detail.detections
    )
    verdicts = [e for e in detail.events if e.kind == "transition" and e.to_state in VERDICT_STATES]
    findings = "".join(_finding(e, (lon, lat), photos or {}) for e in verdicts) or (
        "<p class='none'>no field verdict recorded yet</p>"
    )
    events = "".join(
        f"<tr><td>{_when(e.at)}</td><td>{_e(e.actor)}</td><td>{_e(e.kind)}</td>"
        f"<td>{_e(e.from_state or '')}{' → ' if e.to_state else ''}{_e(e.to_state or '')}</td>"
        f"<td>{_e(e.comment or '')}</td></tr>"
        for e in detail.events
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{DOSSIER_CSP}\">"
        f"<title>Case {case.id} dossier</title><style>{_CSS}</style></head><body>"
        f"<h1>Case {case.id}: {_e(case.change_type)}, {_e(case.zone or 'outside zones')}</h1>"
        f"<p class='sub'>Dossier for the enforcement file \u00b7 printed {_when(now)}</p>"
        f"<h2>Facts</h2><table><tbody>{rows}</tbody></table>"
        f"<h2>Findings on site</h2>{findings}"
        f"<h2>Evidence (latest detection)</h2><div class='chips'>{''.join(figures)}</div>"
        "<h2>Detections</h2><table><thead><tr><th>date</th><th>clue</th><th>type</th>"
        f"<th>area</th><th>confidence</th><th></th></tr></thead><tbody>{detections}</tbody></table>"
        "<h2>Event trail</h2><table><thead><tr><th>when</th><th>who</th><th>what</th>"
        f"<th>state</th><th>comment</th></tr></thead><tbody>{events}</tbody></table>"
        f"<footer>changedetect {_e(__version__)}</footer></body></html>"
    )
