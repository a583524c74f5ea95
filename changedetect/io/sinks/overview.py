"""The report's overview picture: the AOI's after-date true colour, decimated on read, with every
clue outlined and numbered 1..n, the protection-zone boundaries and a scale bar drawn on it.

Numbers are placed so they hide neither each other nor an outline where there is room, and tiny
clues get a ring so they stay findable on a large AOI shrunk to a page's width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from odc.geo.geobox import GeoBox
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling

from ...errors import GridMismatchError, SinkError
from ...grids import WGS84, pixel_area_m2, reproject_geometry, wgs84_bounds
from ...models import Patch
from ..raster import GDAL_READ_OPTIONS
from ..zones import ProtectionZone
from .chips import PREVIEW_BANDS, SCALE_BAR_M, distance_label
from .palette import SLOT_BLACK, SLOT_OUTLINE, SLOT_WHITE, SLOT_ZONE, palette_image

__all__ = ["MIN_OVERVIEW_PX", "BBox", "Overview", "render_overview"]

#: Small AOIs are enlarged by a whole factor (pixels stay square) to at least this many pixels
#: on their long side, within `max_px`: numbers and outlines need room to be legible.
MIN_OVERVIEW_PX = 800
#: An outline smaller than this (overview pixels) also gets a ring, so a 0.1 ha clue on a
#: 10,000 px AOI shrunk to 1,600 px is still findable.
_RING_BELOW_PX = 8.0

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


def _to_pixels(grid: GeoBox, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Callable:
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
    grid: GeoBox,
    patches: Sequence[Patch],
    *,
    max_px: int = 1600,
    zones: Sequence[ProtectionZone] = (),
) -> Overview:
    """The after-date true colour of `rgb_path` (the preview raster, bands 4-6 = after RGB, on
    `grid`) at most `max_px` on its long side, with each patch outlined and numbered 1..n in order.

    Only the decimated picture is read (rasterio `out_shape`, averaged), so memory follows
    `max_px`, not the AOI: a 10,000 px square AOI costs a few MB.
    """
    # a small GDAL block cache: the decimated read streams through every block once, and the
    # default cache (5 % of RAM) would otherwise keep hundreds of MB of them
    with rasterio.Env(**GDAL_READ_OPTIONS), rasterio.open(rgb_path) as src:
        if (src.height, src.width) != grid.shape.yx:
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
    image = palette_image(np.moveaxis(after, 0, -1))
    draw = ImageDraw.Draw(image)
    to_px = _to_pixels(grid, out_w / grid.width, out_h / grid.height)
    line = 2 if max(out_h, out_w) < 1200 else 3
    # zone boundaries under the clue outlines: the outlines must stay whole
    frame = shapely.box(*grid.boundingbox)
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
        _draw_outline(draw, geom, SLOT_OUTLINE, line)
        if max(x1 - x0, y1 - y0) < _RING_BELOW_PX:
            cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, _RING_BELOW_PX
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=SLOT_OUTLINE, width=line)
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
            fill=SLOT_WHITE,
            stroke_width=stroke,
            stroke_fill=SLOT_BLACK,
        )
    metres_per_px = math.sqrt(pixel_area_m2(grid)) * grid.width / out_w
    bar = _draw_scale_bar(draw, metres_per_px, (out_w, out_h))
    west, south, east, north = wgs84_bounds(grid)
    return Overview(image, boxes, ((west, north), (east, south)), drawn_zones, bar)


def _draw_lines(draw: ImageDraw.ImageDraw, geom: Any, width: int) -> None:
    parts = getattr(geom, "geoms", [geom])
    for part in parts:
        if part.geom_type in ("LineString", "LinearRing") and len(part.coords) > 1:
            draw.line(list(part.coords), fill=SLOT_ZONE, width=width)
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
    draw.rectangle((x0 - 2, y1 - 7, x0 + length + 2, y1 + 2), fill=SLOT_BLACK)
    draw.rectangle((x0, y1 - 5, x0 + length, y1), fill=SLOT_WHITE)
    font = _font(14)
    draw.text(
        (x0, y1 - 26),
        distance_label(metres),
        font=font,
        fill=SLOT_WHITE,
        stroke_width=2,
        stroke_fill=SLOT_BLACK,
    )
    return float(metres)
