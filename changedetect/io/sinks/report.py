"""`report.html`: one self-contained page per AOI run, for the analyst who triages it in the morning.

The page makes no request of any kind: CSS is inline, images are PNG `data:` URIs, there is no
JavaScript, and a Content-Security-Policy forbids anything else, so it can be mailed, archived or
opened on an offline laptop and always shows the same thing. It holds:

- a header: AOI, before/after windows, detection date, clue counts, run information;
- an overview of the AOI (after-date true colour, decimated on read) with every clue outlined and
  numbered 1..n in the order of `clues`; each number links to its card;
- summary tables by change type, protection zone (and tier), county and priority;
- a compact table of every clue, then one card per clue with its facts and the before/after chips
  side by side.

Everything that comes from a clue is escaped, so a zone or county name can hold any character.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import io
import math
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.windows import transform as window_transform

from ... import __version__
from ...errors import GridMismatchError, SinkError
from ...grids import WGS84, pixel_area_m2, reproject_geometry, wgs84_bounds
from ...models import GridSpec, Patch, PatchClue, TimeWindow
from ...navigation import navigation
from ...types import CHANGE_TYPES
from ..atomic import atomic_path
from ..raster import GDAL_READ_OPTIONS
from ..zones import ProtectionZone
from .chips import (
    OUTLINE_RGB,
    PREVIEW_BANDS,
    SCALE_BAR_M,
    chip_window,
    distance_label,
    png_workers,
    render_chips,
)

__all__ = ["Overview", "render_overview", "write_report"]

#: Colours drawn over the imagery. They get the last palette slots, after the imagery has been
#: quantised, so outlines and numbers keep their exact colour however busy the picture is.
_OVERLAY = (OUTLINE_RGB, (0, 0, 0), (255, 255, 255), ZONE_RGB := (0, 220, 255))
_BASE_COLOURS = 256 - len(_OVERLAY)
_SLOT_OUTLINE, _SLOT_BLACK, _SLOT_WHITE, _SLOT_ZONE = range(_BASE_COLOURS, 256)


#: Small AOIs are enlarged by a whole factor (pixels stay square) to at least this many pixels
#: on their long side, within `max_overview_px`: numbers and outlines need room to be legible.
MIN_OVERVIEW_PX = 800
#: An outline smaller than this (overview pixels) also gets a ring, so a 0.1 ha clue on a
#: 10,000 px AOI shrunk to 1,600 px is still findable.
_RING_BELOW_PX = 8.0

_PRIORITIES = ("urgent", "high", "normal", "low")
_DASH = "\u2014"
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Overview:
    """The overview picture and where each clue landed on it."""

    image: Image.Image
    """Palette ("P") image of the after-date true colour with the outlines and numbers drawn."""
    boxes: list[BBox]
    """Per clue, in input order: (x0, y0, x1, y1) of its outline in overview pixels."""
    corners: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    """(lon, lat) WGS84 of the picture's north-west and south-east corners."""
    zones: int = 0
    """Protection zones whose boundary crosses the picture (drawn in ZONE_RGB)."""
    scale_bar_m: float | None = None
    """Length of the scale bar drawn in the bottom-left corner, metres (None: none fits)."""


# --------------------------------------------------------------------------------------- images


def _palette_image(rgb: np.ndarray) -> Image.Image:
    """An (h, w, 3) uint8 array as a 256-colour palette image with the overlay slots reserved.

    True-colour PNGs of noisy imagery compress badly (~35 kB per 128 px chip); an octree palette
    makes that ~10 kB with no visible loss (mean error ~3/255) in under a millisecond, which keeps
    a report of hundreds of clues small and quick. Pixels already in OUTLINE_RGB (outlines drawn
    by chips.py or by us) are put in the outline slot: quantising alone can merge a thin outline
    into a nearby imagery colour and make it vanish.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    image = Image.fromarray(rgb, mode="RGB").quantize(
        _BASE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    palette = (image.getpalette() or [])[: _BASE_COLOURS * 3]
    palette += [0] * (_BASE_COLOURS * 3 - len(palette))
    for colour in _OVERLAY:
        palette.extend(colour)
    image.putpalette(palette)
    outline = np.all(rgb == np.asarray(OUTLINE_RGB, dtype=np.uint8), axis=-1)
    if outline.any():
        image.paste(_SLOT_OUTLINE, None, Image.fromarray(outline.astype(np.uint8) * 255, mode="L"))
    return image


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    # no `optimize`: ~10 % smaller files for ~10x the encoding time on a big overview
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _to_pixels(grid: GridSpec, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Callable:
    """A shapely coordinate function: grid CRS -> pixels of an image showing the grid's pixels
    shifted by (-dx, -dy) and scaled by (sx, sy)."""
    inv = ~grid.transform

    def apply(xy: np.ndarray) -> np.ndarray:
        col = inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c
        row = inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f
        return np.column_stack([(col - dx) * sx, (row - dy) * sy])

    return apply


def _rings(geom: Any) -> list[list[tuple[float, float]]]:
    rings = []
    for part in shapely.get_parts(geom):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        for ring in (part.exterior, *part.interiors):
            rings.append([(float(x), float(y)) for x, y in ring.coords])
    return rings


def _draw_outline(draw: ImageDraw.ImageDraw, geom: Any, fill: Any, width: int) -> None:
    for ring in _rings(geom):
        draw.line(ring, fill=fill, width=width, joint="curve")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's own embedded font: no system font needed, looks the same everywhere
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _overlaps(a: BBox, b: BBox) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class _Taken:
    """The label boxes placed so far, filed under every cell of a coarse grid that they touch.

    A candidate is checked against the boxes in its own cells only: two boxes that overlap share
    a point strictly inside both, hence that point's cell. Checking against every earlier label
    made numbering thousands of clues quadratic (7,000 clues: some 10^8 comparisons)."""

    def __init__(self, cell: float = 64.0) -> None:
        self.cell = cell
        self.cells: dict[tuple[int, int], list[BBox]] = {}
        self.odd: list[BBox] = []  # boxes with a non-finite edge, compared one by one
        self.every: list[BBox] = []

    def _keys(self, box: BBox) -> list[tuple[int, int]]:
        x0, y0, x1, y1 = (math.floor(v / self.cell) for v in box)
        return [(i, j) for i in range(x0, x1 + 1) for j in range(y0, y1 + 1)]

    def add(self, box: BBox) -> None:
        self.every.append(box)
        if not all(math.isfinite(v) for v in box):
            self.odd.append(box)
            return
        for key in self._keys(box):
            self.cells.setdefault(key, []).append(box)

    def hides(self, box: BBox) -> bool:
        """Whether `box` overlaps any box placed so far."""
        if not all(math.isfinite(v) for v in box):
            return any(_overlaps(box, other) for other in self.every)
        if any(_overlaps(box, other) for other in self.odd):
            return True
        return any(
            _overlaps(box, other) for key in self._keys(box) for other in self.cells.get(key, ())
        )


def _place_label(
    box: BBox, size: tuple[float, float], image: tuple[int, int], taken: _Taken
) -> BBox:
    """Where a label of `size` goes next to `box`: the first candidate that hides no earlier label."""
    (x0, y0, x1, y1), (tw, th), (w, h) = box, size, image
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    candidates = [
        (x1 + 2, y0 - th),
        (x0 - tw - 2, y0 - th),
        (x1 + 2, y1),
        (x0 - tw - 2, y1),
        (x1 + 2, cy - th / 2),
        (x0 - tw - 2, cy - th / 2),
        (cx - tw / 2, y0 - th - 2),
        (cx - tw / 2, y1 + 2),
    ]
    placed = []
    for left, top in candidates:
        left = min(max(left, 0.0), max(w - tw, 0.0))
        top = min(max(top, 0.0), max(h - th, 0.0))
        placed.append((left, top, left + tw, top + th))
    for candidate in placed:
        if not taken.hides(candidate):
            return candidate
    return placed[0]


def render_overview(
    rgb_path: Path,
    grid: GridSpec,
    patches: Sequence[Patch],
    *,
    max_px: int = 1600,
    zones: Sequence[ProtectionZone] = (),
) -> Overview:
    """The after-date true colour of `rgb_path` (the preview raster, bands 4-6 = after RGB, on
    `grid`)
    at most `max_px` on its long side, with each patch outlined and numbered 1..n in order.

    Only the decimated picture is read (rasterio `out_shape`, averaged), so memory follows
    `max_px`, not the AOI: a 10,000 px square AOI costs a few MB.
    """
    # a small GDAL block cache: the decimated read streams through every block once, and the
    # default cache (5 % of RAM) would otherwise keep hundreds of MB of them
    with rasterio.Env(**GDAL_READ_OPTIONS), rasterio.open(rgb_path) as src:
        if (src.height, src.width) != grid.shape:
            raise GridMismatchError(
                f"{rgb_path}: {src.width}x{src.height} px, but the analysis grid is "
                f"{grid.width}x{grid.height}; pass the rgb.tif written for this grid"
            )
        if src.count != PREVIEW_BANDS:
            raise SinkError(
                f"{rgb_path}: {src.count} band(s), expected {PREVIEW_BANDS} (the preview the "
                "pass writes: before and after RGB, then SWIR and NIR)"
            )
        long_side = max(grid.height, grid.width)
        if long_side > max_px:
            scale = max_px / long_side
        else:
            scale = float(max(1, min(math.ceil(MIN_OVERVIEW_PX / long_side), max_px // long_side)))
        out_h = max(1, round(grid.height * scale))
        out_w = max(1, round(grid.width * scale))
        after = src.read(
            (4, 5, 6),
            out_shape=(3, out_h, out_w),
            resampling=Resampling.average if scale < 1 else Resampling.nearest,
        )
    image = _palette_image(np.moveaxis(after, 0, -1))
    draw = ImageDraw.Draw(image)
    to_px = _to_pixels(grid, out_w / grid.width, out_h / grid.height)
    line = 2 if max(out_h, out_w) < 1200 else 3
    # zone boundaries under the clue outlines: the outlines must stay whole
    frame = shapely.box(*grid.bounds)
    drawn_zones = 0
    for zone in zones:
        boundary = reproject_geometry(zone.geometry, WGS84, grid.crs).boundary
        if boundary.intersects(frame):
            drawn_zones += 1
            _draw_lines(draw, shapely.transform(boundary.intersection(frame), to_px), line)
    boxes: list[BBox] = []
    for patch in patches:
        geom = shapely.transform(patch.geometry, to_px)
        x0, y0, x1, y1 = geom.bounds
        _draw_outline(draw, geom, _SLOT_OUTLINE, line)
        if max(x1 - x0, y1 - y0) < _RING_BELOW_PX:
            cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, _RING_BELOW_PX
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=_SLOT_OUTLINE, width=line)
            x0, y0, x1, y1 = cx - r, cy - r, cx + r, cy + r
        boxes.append((x0, y0, x1, y1))
    # numbers after every outline, so no outline is drawn over a number
    font = _font(int(min(max(round(max(out_h, out_w) / 45), 14), 30)))
    stroke = 2
    taken = _Taken()
    for number, box in enumerate(boxes, start=1):
        text = str(number)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        label = _place_label(box, (right - left, bottom - top), (out_w, out_h), taken)
        taken.add(label)
        draw.text(
            (label[0] - left, label[1] - top),
            text,
            font=font,
            fill=_SLOT_WHITE,
            stroke_width=stroke,
            stroke_fill=_SLOT_BLACK,
        )
    metres_per_px = math.sqrt(pixel_area_m2(grid)) * grid.width / out_w
    bar = _draw_scale_bar(draw, metres_per_px, (out_w, out_h))
    west, south, east, north = wgs84_bounds(grid)
    return Overview(image, boxes, ((west, north), (east, south)), drawn_zones, bar)


def _draw_lines(draw: ImageDraw.ImageDraw, geom: Any, width: int) -> None:
    parts = getattr(geom, "geoms", [geom])
    for part in parts:
        if part.geom_type in ("LineString", "LinearRing") and len(part.coords) > 1:
            draw.line(list(part.coords), fill=_SLOT_ZONE, width=width)
        elif hasattr(part, "geoms"):
            _draw_lines(draw, part, width)


def _draw_scale_bar(
    draw: ImageDraw.ImageDraw, metres_per_px: float, size: tuple[int, int]
) -> float | None:
    """A bar of a round length, at most a quarter of the picture, in the bottom-left corner."""
    width, height = size
    fits = [m for m in SCALE_BAR_M if m / metres_per_px <= width * 0.25]
    if not fits or height < 60:
        return None
    metres = fits[-1]
    length = round(metres / metres_per_px)
    x0, y1 = 12, height - 12
    draw.rectangle((x0 - 2, y1 - 7, x0 + length + 2, y1 + 2), fill=_SLOT_BLACK)
    draw.rectangle((x0, y1 - 5, x0 + length, y1), fill=_SLOT_WHITE)
    font = _font(14)
    draw.text(
        (x0, y1 - 26),
        distance_label(metres),
        font=font,
        fill=_SLOT_WHITE,
        stroke_width=2,
        stroke_fill=_SLOT_BLACK,
    )
    return float(metres)


def _cut_chips(src: Any, grid: GridSpec, patch: Patch, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Before/after chips of `patch` as chips.py renders them, from the preview raster."""
    window = chip_window(patch, src.height, src.width)
    data = src.read(window=window)
    own = rasterize(
        [patch.geometry],
        out_shape=data.shape[1:],
        transform=window_transform(window, grid.transform),
        dtype="uint8",
    ).astype(bool)
    return render_chips(data, own, math.sqrt(abs(grid.transform.a * grid.transform.e)), size)


class _ChipSource:
    """Chips for each clue: the pipeline's PNGs from `chip_dir` where present, else cut from
    `rgb_path` (opened once, only if needed)."""

    def __init__(self, chip_dir: Path | None, rgb_path: Path, grid: GridSpec, size: int) -> None:
        self.chip_dir = chip_dir
        self.rgb_path = rgb_path
        self.grid = grid
        self.size = size
        self._src: Any = None
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()

    def __enter__(self) -> _ChipSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _from_dir(self, clue: PatchClue, tag: str) -> np.ndarray | None:
        if self.chip_dir is None:
            return None
        recorded = clue.chip_before if tag == "before" else clue.chip_after
        # only the file name counts: the recorded path is relative to the output folder, and a
        # clue must not be able to point outside chip_dir
        name = Path(recorded).name if recorded else f"{clue.clue_id}_{tag}.png"
        path = self.chip_dir / name
        if not path.is_file():
            return None
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    def uris(self, clue: PatchClue, patch: Patch) -> tuple[str, str]:
        """The clue's chips as PNG data URIs; safe to call from several threads."""
        before, after = self._from_dir(clue, "before"), self._from_dir(clue, "after")
        if before is None or after is None:
            # one dataset handle, opened once and read by one thread at a time; a GDAL
            # environment belongs to the thread that entered it, so each read enters its own
            with self._lock, rasterio.Env(**GDAL_READ_OPTIONS):
                if self._src is None:
                    self._src = self._stack.enter_context(rasterio.open(self.rgb_path))
                before, after = _cut_chips(self._src, self.grid, patch, self.size)
        return _data_uri(_palette_image(before)), _data_uri(_palette_image(after))


# ----------------------------------------------------------------------------------------- text


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> bool:
    # numbers.Real covers numpy scalars too (np.float32 is no Python float)
    return isinstance(value, numbers.Real) and math.isfinite(value)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if _finite(value) else _DASH


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


Row = tuple[str, str | None, int, float]  # label, tier, count, area m²


def _group(
    clues: Sequence[PatchClue], key: Callable[[PatchClue], tuple[str, str | None]]
) -> list[Row]:
    counts: dict[tuple[str, str | None], list[float]] = {}
    for clue in clues:
        entry = counts.setdefault(key(clue), [0, 0.0])
        entry[0] += 1
        entry[1] += clue.area_m2 if _finite(clue.area_m2) else 0.0
    rows = [(label, tier, int(n), area) for (label, tier), (n, area) in counts.items()]
    # the most affected first; names break ties so the page is the same for the same clues
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1] or ""))


def _in_order(
    clues: Sequence[PatchClue], key: Callable[[PatchClue], str], order: Sequence[str]
) -> list[Row]:
    """Rows for every value of a fixed vocabulary, zeros included ("0 quarry" is news too), in
    its own order, then any value outside it."""
    rows = {row[0]: row for row in _group(clues, lambda c: (key(c), None))}
    labels = [*order, *sorted(set(rows) - set(order))]
    return [rows.get(label, (label, None, 0, 0.0)) for label in labels]


def _zone_key(clue: PatchClue) -> tuple[str, str | None]:
    if clue.zone is None:
        return ("outside protected zones", None)
    return (str(clue.zone), None if clue.zone_tier is None else str(clue.zone_tier))


def _county_key(clue: PatchClue) -> tuple[str, str | None]:
    return ("unknown county" if clue.county is None else str(clue.county), None)


def _table(table_id: str, caption: str, head: str, rows: list[Row], tier: bool) -> str:
    cols = f"<th scope='col'>{_e(head)}</th>" + ("<th scope='col'>tier</th>" if tier else "")
    out = [
        f"<table class='summary' id='{table_id}'><caption>{_e(caption)}</caption>",
        f"<thead><tr>{cols}<th scope='col' class='num'>clues</th>",
        "<th scope='col' class='num'>area (ha)</th></tr></thead><tbody>",
    ]
    for label, tier_name, n, area in rows:
        tier_cell = f"<td class='tier'>{_e(tier_name or _DASH)}</td>" if tier else ""
        zero = " class='zero'" if n == 0 else ""
        out.append(
            f"<tr{zero}><th scope='row' class='label'>{_e(label)}</th>{tier_cell}"
            f"<td class='num count'>{n}</td><td class='num area'>{_ha(area)}</td></tr>"
        )
    total_n = sum(r[2] for r in rows)
    total_area = sum(r[3] for r in rows)
    span = " colspan='2'" if tier else ""
    out.append(
        f"</tbody><tfoot><tr><th scope='row'{span}>total</th><td class='num'>{total_n}</td>"
        f"<td class='num'>{_ha(total_area)}</td></tr></tfoot></table>"
    )
    return "".join(out)


# ---------------------------------------------------------------------------------------- parts


def _header(
    title: str,
    aoi: str,
    clues: Sequence[PatchClue],
    before: TimeWindow | Sequence[str] | None,
    after: TimeWindow | Sequence[str] | None,
    detected_at: str | None,
    run_info: Mapping[str, Any] | None,
) -> str:
    if before is None and clues:
        before = clues[0].before
    if after is None and clues:
        after = clues[0].after
    if detected_at is None and clues:
        detected_at = max(str(c.detected_at) for c in clues)
    by_priority = {p: 0 for p in _PRIORITIES}
    for clue in clues:
        by_priority[clue.priority] = by_priority.get(clue.priority, 0) + 1
    breakdown = " \u00b7 ".join(f"{n} {_e(p)}" for p, n in by_priority.items() if n)
    facts = [
        ("AOI", _e(aoi)),
        ("before", _e(_window_text(before))),
        ("after", _e(_window_text(after))),
        ("detected", _e(detected_at or _DASH)),
        (
            "clues",
            f"<strong id='n-clues'>{len(clues)}</strong>"
            + (f" ({breakdown})" if breakdown else ""),
        ),
    ]
    out = [f"<header><h1>{_e(title)}</h1><dl class='facts'>"]
    out += [f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts]
    out.append("</dl>")
    if run_info:
        out.append("<table class='run-info'><caption>run</caption><tbody>")
        out += [
            f"<tr><th scope='row'>{_e(k)}</th><td>{_e(_info_value(v))}</td></tr>"
            for k, v in run_info.items()
        ]
        out.append("</tbody></table>")
    out.append("</header>")
    return "".join(out)


def _overview_section(overview: Overview, after_text: str) -> str:
    width, height = overview.image.size
    links = []
    for number, (x0, y0, x1, y1) in enumerate(overview.boxes, start=1):
        # a transparent link over each outline, in percent so it follows the picture's CSS size
        pad = 4.0
        left, top = max(x0 - pad, 0.0) / width * 100, max(y0 - pad, 0.0) / height * 100
        w = (min(x1 + pad, width) - max(x0 - pad, 0.0)) / width * 100
        h = (min(y1 + pad, height) - max(y0 - pad, 0.0)) / height * 100
        links.append(
            f"<a class='hit' href='#clue-{number}' title='clue {number}' "
            f"style='left:{left:.3f}%;top:{top:.3f}%;width:{w:.3f}%;height:{h:.3f}%'></a>"
        )
    return (
        "<section id='overview'><h2>Overview</h2>"
        f"<figure><div class='map'><img src='{_data_uri(overview.image)}' width='{width}' "
        f"height='{height}' alt='after-date true colour with the clues outlined'>"
        + "".join(links)
        + f"</div><figcaption>After {_e(after_text)}, true colour; "
        + (
            f"{len(overview.boxes)} clue(s) outlined in yellow and numbered as below "
            "(click a clue to jump to its card)."
            if overview.boxes
            else "no clue."
        )
        + (f" Protection zone boundaries in cyan ({overview.zones})." if overview.zones else "")
        + (f" Scale bar {distance_label(overview.scale_bar_m)}." if overview.scale_bar_m else "")
        + " Corners (lat, lon, WGS84): north-west "
        + f"<span class='ll'>{_corner(overview.corners[0])}</span>, south-east "
        + f"<span class='ll'>{_corner(overview.corners[1])}</span>."
        + "</figcaption></figure></section>"
    )


def _corner(lon_lat: tuple[float, float]) -> str:
    lon, lat = lon_lat
    return f"{_fmt(lat, '.5f')}, {_fmt(lon, '.5f')}"


def _summary_section(clues: Sequence[PatchClue]) -> str:
    by_type = _in_order(clues, lambda c: str(c.change_type), CHANGE_TYPES)
    by_priority = _in_order(clues, lambda c: str(c.priority), _PRIORITIES)
    return (
        "<section id='summary'><h2>Summary</h2><div class='tables'>"
        + _table("by-type", "by change type", "change type", by_type, False)
        + _table("by-zone", "by protection zone", "zone", _group(clues, _zone_key), True)
        + _table("by-county", "by county", "county", _group(clues, _county_key), False)
        + _table("by-priority", "by priority", "priority", by_priority, False)
        + "</div></section>"
    )


def _index_table(clues: Sequence[PatchClue]) -> str:
    out = [
        "<section id='index'><h2>All clues</h2><table class='index'><thead><tr>",
        "<th scope='col' class='num'>#</th><th scope='col'>clue</th><th scope='col'>type</th>",
        "<th scope='col'>priority</th><th scope='col'>confidence</th><th scope='col'>zone</th>",
        "<th scope='col'>county</th><th scope='col' class='num'>area (ha)</th></tr></thead><tbody>",
    ]
    for number, c in enumerate(clues, start=1):
        prio = _known(c.priority, _PRIORITIES, "other")
        out.append(
            f"<tr><td class='num'><a href='#clue-{number}'>{number}</a></td>"
            f"<td class='id'>{_e(c.clue_id)}</td><td>{_e(c.change_type)}</td>"
            f"<td><span class='badge prio-{prio}'>{_e(c.priority)}</span></td>"
            f"<td>{_e(c.confidence_level)}</td><td>{_e(c.zone or _DASH)}</td>"
            f"<td>{_e(c.county or _DASH)}</td><td class='num'>{_ha(c.area_m2)}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _card(number: int, clue: PatchClue, chips: tuple[str, str]) -> str:
    lon, lat = clue.centroid
    prio = _known(clue.priority, _PRIORITIES, "other")
    kind = _known(clue.change_type, CHANGE_TYPES, "other")
    nav = navigation(lon, lat, clue.area_m2, clue.clue_id)
    gcj_lon, gcj_lat = nav["centroid_gcj02"]  # type: ignore[misc]
    area = (
        f"{_fmt(clue.area_m2, ',.0f')} m\u00b2 ({_ha(clue.area_m2)} ha, "
        f"{_fmt(nav['area_mu'], ',.1f')} \u4ea9)"
    )
    links = " \u00b7 ".join(
        f"<a class='nav' href='{_e(nav[key])}'>{label}</a>"
        for key, label in (("link_amap", "Amap"), ("link_baidu", "Baidu"), ("link_geo", "geo:"))
    )
    zone = _e(clue.zone or "outside protected zones")
    if clue.zone_tier:
        zone += f" <span class='tier'>({_e(clue.zone_tier)})</span>"
    facts = [
        ("type", f"<span class='type type-{kind}'>{_e(clue.change_type)}</span>"),
        ("confidence", f"{_fmt(clue.confidence, '.2f')} ({_e(clue.confidence_level)})"),
        ("priority", f"<span class='badge prio-{prio}'>{_e(clue.priority)}</span>"),
        ("area", area),
        ("zone", zone),
        ("county", _e(clue.county or _DASH)),
        ("centroid", f"<span class='ll'>{_fmt(lat, '.5f')}, {_fmt(lon, '.5f')}</span> (lat, lon)"),
        (
            "GCJ-02",
            f"<span class='ll'>{_fmt(gcj_lat, '.5f')}, {_fmt(gcj_lon, '.5f')}</span> "
            "(Amap, Tencent)",
        ),
        ("navigate", links),
        (
            "\u0394 indices",
            f"NDVI {_fmt(clue.d_ndvi, '+.3f')} \u00b7 BSI {_fmt(clue.d_bsi, '+.3f')} "
            f"\u00b7 NDBI {_fmt(clue.d_ndbi, '+.3f')}",
        ),
        ("status", _e(clue.status)),
    ]
    rows = "".join(f"<tr><th scope='row'>{k}</th><td>{v}</td></tr>" for k, v in facts)
    before_uri, after_uri = chips
    return (
        f"<article class='clue prio-{prio}' id='clue-{number}'>"
        f"<h3><span class='no'>{number}</span> <span class='id'>{_e(clue.clue_id)}</span></h3>"
        "<div class='body'><div class='chips'>"
        f"<figure><img src='{before_uri}' alt='before, clue {number}'>"
        f"<figcaption>before {_e(_window_text(clue.before))} \u00b7 true colour | false colour "
        "(SWIR-NIR-red)</figcaption></figure>"
        f"<figure><img src='{after_uri}' alt='after, clue {number}'>"
        f"<figcaption>after {_e(_window_text(clue.after))}</figcaption></figure>"
        f"</div><table class='props'><tbody>{rows}</tbody></table></div></article>"
    )


_CSS = """
:root{--ink:#1d232a;--muted:#5d6b78;--line:#d5dbe1;--bg:#f4f6f8;--card:#fff;--accent:#b58900}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1240px;padding:16px 20px 40px;color:var(--ink);background:var(--bg);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif}
h1{font-size:1.6em;margin:.2em 0 .4em}h2{font-size:1.25em;margin:1.4em 0 .5em;border-bottom:2px solid var(--line)}
h3{font-size:1.05em;margin:0 0 .5em}
.facts{display:flex;flex-wrap:wrap;gap:6px 28px;margin:0 0 10px}
.facts div{display:flex;gap:8px}.facts dt{color:var(--muted)}.facts dd{margin:0;font-weight:600}
table{border-collapse:collapse;background:var(--card)}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:#e9edf1;font-weight:600}caption{text-align:left;font-weight:600;padding:4px 0}
.num{text-align:right;font-variant-numeric:tabular-nums}
tfoot th,tfoot td{font-weight:700;border-top:2px solid var(--line)}
tr.zero td,tr.zero th{color:var(--muted)}
.run-info th{color:var(--muted);font-weight:400}
.tables{display:flex;flex-wrap:wrap;gap:16px 24px;align-items:flex-start}
figure{margin:0}figcaption{color:var(--muted);font-size:.9em;margin-top:4px}
.map{position:relative;line-height:0}
.map img{display:block;width:100%;height:auto;image-rendering:pixelated;border:1px solid var(--line)}
.map a.hit{position:absolute;display:block}
.map a.hit:hover,.map a.hit:focus{outline:2px solid #fff;background:rgba(255,255,255,.18)}
.index{width:100%}.index td.id,.card .id,h3 .id{font-family:ui-monospace,"DejaVu Sans Mono",monospace}
.cards{display:grid;gap:12px}
.clue{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--line);
 border-radius:4px;padding:10px 12px;scroll-margin-top:12px}
.clue:target{box-shadow:0 0 0 3px var(--accent)}
.clue .no{display:inline-block;min-width:1.8em;text-align:center;background:var(--ink);color:#fff;
 border-radius:3px;padding:0 4px}
.body{display:flex;flex-wrap:wrap;gap:12px}
.chips{display:flex;flex-direction:column;gap:6px}
.chips img{display:block;width:400px;max-width:100%;height:auto;image-rendering:pixelated;
 border:1px solid var(--line)}
.props th{color:var(--muted);font-weight:400;white-space:nowrap}.props{flex:1 1 240px}
.badge{display:inline-block;padding:0 6px;border-radius:3px;background:#e9edf1}
.prio-urgent{border-left-color:#c0392b}.badge.prio-urgent{background:#c0392b;color:#fff}
.prio-high{border-left-color:#e67e22}.badge.prio-high{background:#e67e22;color:#fff}
.prio-normal{border-left-color:#2980b9}.badge.prio-normal{background:#d6e6f2}
.prio-low{border-left-color:#95a5a6}
.type{font-weight:600}
.empty{font-size:1.15em;padding:14px;background:var(--card);border:1px solid var(--line)}
footer{margin-top:28px;color:var(--muted);font-size:.85em}
@page{size:A4;margin:12mm}
@media print{
 body{max-width:none;padding:0;background:#fff;font-size:9.5pt}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 #overview{break-after:page}.map a.hit{display:none}
 .cards{display:block}.clue{break-inside:avoid;margin-bottom:8px;box-shadow:none}
 .chips img{width:90mm;height:auto}
 a{color:inherit;text-decoration:none}
 h2{break-after:avoid}tr{break-inside:avoid}
}
"""


def _review_order(clue: PatchClue, index: int) -> tuple[int, float, int]:
    rank = _PRIORITIES.index(clue.priority) if clue.priority in _PRIORITIES else len(_PRIORITIES)
    confidence = clue.confidence if math.isfinite(clue.confidence) else 0.0
    return rank, -confidence, index


def write_report(
    out_path: Path,
    *,
    aoi: str,
    clues: Sequence[PatchClue],
    patches: Sequence[Patch],
    grid: GridSpec,
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
    taken from `chip_dir` (the file named by `chip_before`/`chip_after`, or
    `<clue_id>_{before,after}.png`) and, where missing, cut from `rgb_path` (`chip_px` a side,
    framed as chips.py frames them). `before`, `after` and
    `detected_at` fill the header when there are no clues to take them from. `run_info` is shown
    as a key/value table (timings, source, ...). `zones` are drawn on the overview. Returns
    `out_path`.
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
    after_text = _window_text(after if after is not None else (clues[0].after if clues else None))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<meta name='generator' content='changedetect {_e(__version__)}'>",
        # an empty icon, or a browser may try to fetch favicon.ico next to the file
        "<link rel='icon' href='data:,'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        _header(title, aoi, clues, before, after, detected_at, run_info),
    ]
    if not clues:
        # first thing on the page: on a quiet night that is all the analyst needs to read
        parts.append(
            "<p class='empty' id='no-change'>No change found: this run produced no clue for "
            f"{_e(aoi)} between the before and after windows.</p>"
        )
    parts.append(_overview_section(overview, after_text))
    if clues:
        parts += [
            _summary_section(clues),
            _index_table(clues),
            "<section id='clues'><h2>Clues</h2><div class='cards'>",
        ]
        # decoding, quantising and encoding the chips is most of a large report's time: done on
        # threads (Pillow releases the GIL), the cards kept in clue order
        with (
            _ChipSource(chip_dir, rgb_path, grid, chip_px) as chips,
            ThreadPoolExecutor(png_workers(), "report-chips") as pool,
        ):
            uris = pool.map(chips.uris, clues, patches)
            for number, (clue, chip_uris) in enumerate(zip(clues, uris, strict=True), start=1):
                parts.append(_card(number, clue, chip_uris))
        parts.append("</div></section>")
    parts.append(
        f"<footer>changedetect {_e(__version__)} \u00b7 clues numbered in the order of "
        "clues.geojson; the clue id is the stable key.</footer></body></html>\n"
    )
    with atomic_path(out_path) as tmp:
        tmp.write_text("".join(parts), encoding="utf-8")
    return out_path
