"""Before/after PNG chips per clue, for analysts to check a change on: framed on the patch,
true colour and false colour (SWIR-NIR-red) side by side under one stretch for both dates, the
outline drawn around the changed pixels, not over them, and a scale bar. A third chip shows the
NDVI change over the same frame on a fixed diverging palette, with its legend beside it."""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dask
import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.windows import Window

from ...algorithms.jit import ngjit
from ...algorithms.patch_pixels import PatchPixels
from ...models import Patch
from ...types import ANALYSIS_BANDS
from ..atomic import atomic_path
from .ndvi_change import CHANGE_LIMIT, NO_DATA_RGB, change_rgb, ndvi_change
from .palette import OUTLINE_RGB, palette_image, png_bytes

#: A dark edge just outside the change chip's outline: the palette's pale middle (no change,
#: most of the ground around a patch) is too close to the outline's yellow to show it alone.
OUTLINE_EDGE_RGB = (0, 0, 0)
#: The legend's text.
LEGEND_INK = (29, 35, 42)

#: The preview raster's bands (uint8): before R, G, B; after R, G, B; then before SWIR2, NIR and
#: after SWIR2, NIR (with red, the false-colour SWIR-NIR-red composite that tells bare ground,
#: vegetation and water apart where true colour barely does).
PREVIEW_BANDS = 10
_TRUE = [ANALYSIS_BANDS.index(b) for b in ("B04", "B03", "B02")]
_INFRARED = [ANALYSIS_BANDS.index(b) for b in ("B12", "B08")]
#: Reflectance mapped onto 1-255 (square root, so dark vegetation stays readable) up to this:
#: the visible bands, then the brighter NIR and SWIR (bare soil reaches 0.4 there).
VISIBLE_TOP, INFRARED_TOP = 0.3, 0.5

#: A chip frames its patch at this many times the patch's extent, so the ground around it shows
#: what changed against what did not ...
FRAME = 3.5
#: ... and at least this many pixels (240 m at 10 m): a 4-pixel patch is not a blur.
MIN_FRAME_PX = 24
#: Percentiles of the stretch, taken over both dates of a chip together: the same stretch for
#: before and after, so a difference in colour is a difference on the ground.
STRETCH_PERCENTILES = (2.0, 98.0)
#: Lengths a scale bar may have, in metres (chips and the report's overview).
SCALE_BAR_M = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
#: White between the true-colour and the false-colour panel, in pixels.
PANEL_GAP = 4


_thread_fonts = threading.local()


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font, loaded once per thread: a new ImageDraw loads it again for its first
    text (a base64 decode and a FreeType face, about a sixth of a chip's cost), and a FreeType
    face is not for sharing between threads."""
    font = getattr(_thread_fonts, "font", None)
    if font is None:
        font = _thread_fonts.font = ImageFont.load_default()
    return font


def _to_byte(reflectance: np.ndarray, top: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        scaled = np.sqrt(np.clip(reflectance / top, 0.0, 1.0)) * 254.0 + 1.0
    return np.where(np.isfinite(reflectance), scaled, 0).astype(np.uint8)


def preview_bytes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The preview of a block from its (band, y, x) before and after reflectance: the
    :data:`PREVIEW_BANDS` uint8 bands, 0 where there is no data."""
    if before.dtype == after.dtype == np.float32:
        # the pass hands over its blocks trimmed out of their halo: the kernel compiled for such
        # views cannot assume contiguous rows and took 10.9 ms a 512² block, the copy and the
        # kernel on it 2.2
        return _preview_kernel(
            np.ascontiguousarray(before),
            np.ascontiguousarray(after),
            _PREVIEW_SOURCES,
            _PREVIEW_TOPS,
            np.float32(254.0),
            np.float32(1.0),
        )
    return _preview_numpy(before, after)


def _preview_numpy(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """:func:`preview_bytes` in numpy (any float dtype)."""
    return np.concatenate(
        [
            _to_byte(before[_TRUE], VISIBLE_TOP),
            _to_byte(after[_TRUE], VISIBLE_TOP),
            _to_byte(before[_INFRARED], INFRARED_TOP),
            _to_byte(after[_INFRARED], INFRARED_TOP),
        ]
    )


#: For each preview band: the date (0 before, 1 after) and the band of the reflectance it shows,
#: and the reflectance mapped onto 255.
_PREVIEW_SOURCES = np.array(
    [(0, b) for b in _TRUE] + [(1, b) for b in _TRUE]
    + [(0, b) for b in _INFRARED] + [(1, b) for b in _INFRARED],
    dtype=np.int64,
)  # fmt: skip
_PREVIEW_TOPS = np.array(
    [VISIBLE_TOP] * (2 * len(_TRUE)) + [INFRARED_TOP] * (2 * len(_INFRARED)), dtype=np.float32
)


@ngjit
def _preview_kernel(
    before: np.ndarray,
    after: np.ndarray,
    sources: np.ndarray,
    tops: np.ndarray,
    span: np.float32,
    one: np.float32,
) -> np.ndarray:
    # _to_byte in one pass, the same float32 operations in the same order (a finite value
    # divided by its top, clipped to 0-1, its square root times 254 plus 1, truncated), so the
    # bytes are numpy's (tests/test_chips.py)
    _, h, w = before.shape
    out = np.empty((sources.shape[0], h, w), np.uint8)
    zero = np.float32(0.0)
    for k in range(sources.shape[0]):
        cube = before if sources[k, 0] == 0 else after
        band, top = sources[k, 1], tops[k]
        for y in range(h):
            for x in range(w):
                v = cube[band, y, x]
                if np.isfinite(v):
                    scaled = v / top
                    scaled = one if scaled > one else (zero if scaled < zero else scaled)
                    out[k, y, x] = np.uint8(np.sqrt(scaled) * span + one)
                else:
                    out[k, y, x] = 0
    return out


def _from_byte(values: np.ndarray, top: float) -> np.ndarray:
    """Reflectance back from preview bytes (:func:`_to_byte` inverted); NaN where 0 (no data).
    Reflectance above `top` was clipped to 255 on the way in, so a saturated pixel comes back
    as `top`: bright soil and rock in NIR, or bright ground in red, read a little low."""
    scaled = (values.astype(np.float32) - 1.0) / 254.0
    return np.where(values > 0, scaled * scaled * top, np.float32(np.nan)).astype(np.float32)


def preview_ndvi_change(data: np.ndarray) -> np.ndarray:
    """The NDVI change (after - before) of a window of the preview raster
    (:data:`PREVIEW_BANDS`, y, x): (y, x) float32, NaN where either date has no data."""
    return ndvi_change(
        _from_byte(data[0], VISIBLE_TOP),
        _from_byte(data[7], INFRARED_TOP),
        _from_byte(data[3], VISIBLE_TOP),
        _from_byte(data[9], INFRARED_TOP),
    )


def chip_window(patch: Patch, height: int, width: int) -> Window:
    """A square window of :data:`FRAME` times the patch's extent (at least :data:`MIN_FRAME_PX`),
    centred on the patch, inside the raster."""
    r0, c0, r1, c1 = patch.bbox_rc
    edge = max(MIN_FRAME_PX, math.ceil(FRAME * max(r1 - r0, c1 - c0)))
    edge = min(edge, height, width)
    row = min(max((r0 + r1) // 2 - edge // 2, 0), height - edge)
    col = min(max((c0 + c1) // 2 - edge // 2, 0), width - edge)
    return Window(col, row, edge, edge)


def _stretch(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both (3, y, x) byte images stretched per channel by the same percentiles of the two, as
    (y, x, 3) images."""
    counts = np.zeros((3, 256), np.int64)
    _count_data(before, counts)
    _count_data(after, counts)
    if counts[0].any():
        lo, hi = np.array([byte_percentiles(n, STRETCH_PERCENTILES) for n in counts]).T
    else:
        lo, hi = np.zeros(3), np.full(3, 255.0)
    tables = _stretch_tables(lo, np.maximum(hi, lo + 1.0))
    return _apply_tables(before, tables), _apply_tables(after, tables)


def _stretch_tables(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each byte value stretched from lo-hi onto 1-255, per channel: tables, since a chip's
    bytes take at most 256 values, computed as they would be pixel by pixel (the same float64
    operations)."""
    values = np.arange(256, dtype=np.float64)
    scaled = (values - lo[:, None]) / (hi - lo)[:, None] * 254.0 + 1.0
    return np.clip(scaled, 1.0, 255.0).astype(np.uint8)


@ngjit
def _count_data(img: np.ndarray, counts: np.ndarray) -> None:
    # adds to `counts` (3, 256) how many pixels with data (not 0 in every channel) of a (3, y, x)
    # image have each byte value, per channel: the histogram of the values np.percentile was
    # given, without gathering them
    for y in range(img.shape[1]):
        for x in range(img.shape[2]):
            if img[0, y, x] > 0 or img[1, y, x] > 0 or img[2, y, x] > 0:
                for c in range(3):
                    counts[c, img[c, y, x]] += 1


@ngjit
def _apply_tables(img: np.ndarray, tables: np.ndarray) -> np.ndarray:
    # a (3, y, x) image through a table per channel, as (y, x, 3); 0 where no data
    _, h, w = img.shape
    out = np.zeros((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            if img[0, y, x] > 0 or img[1, y, x] > 0 or img[2, y, x] > 0:
                for c in range(3):
                    out[y, x, c] = tables[c, img[c, y, x]]
    return out


def byte_percentiles(counts: np.ndarray, percentiles: Sequence[float]) -> tuple[float, ...]:
    """``np.percentile(values, percentiles)`` (its default 'linear' method) to the bit, from
    the histogram of the byte values (`counts`: how many of each of 0-255, at least one value).

    np.percentile partitions a copy of the values for each call, which on a chip's tens of
    thousands of bytes costs more than counting them once; the order statistics it interpolates
    between are read off the cumulative counts instead, and interpolated with its formula."""
    ranks = np.cumsum(counts)
    last = int(ranks[-1]) - 1

    def nth(rank: int) -> int:  # the rank-th smallest value (0-based)
        return int(np.searchsorted(ranks, rank, side="right"))

    out = []
    for p in percentiles:
        virtual = last * (p / 100)
        below = min(math.floor(virtual), last)
        above = min(below + 1, last)
        gamma = virtual - below
        a, b = nth(below), nth(above)
        # numpy's _lerp: from the lower value below the middle, from the upper one above it
        out.append(a + (b - a) * gamma if gamma < 0.5 else b - (b - a) * (1 - gamma))
    return tuple(float(v) for v in out)


def _scale_bar(panel: np.ndarray, metres_per_px: float) -> None:
    """A scale bar of a round length, about a quarter of the width, in the bottom-left corner of
    an (h, w, 3) panel, drawn in place."""
    height, width = panel.shape[:2]
    fits = [m for m in SCALE_BAR_M if m / metres_per_px <= width * 0.3]
    if not fits or height < 48:  # a tiny panel has no room for it beside the patch
        return
    metres = fits[-1]
    length = round(metres / metres_per_px)
    x0, y1 = 4, height - 4
    # the rectangles ImageDraw.rectangle fills (corners included), edged in black
    panel[y1 - 4 : y1 + 2, x0 - 1 : x0 + length + 2] = 0
    panel[y1 - 3 : y1 + 1, x0 : x0 + length + 1] = 255
    _draw_label(panel, (x0, y1 - 16), _label(distance_label(metres)))


class _Label(NamedTuple):
    """A scale bar's text as ImageDraw.text draws it in white edged in black: its stroke's and
    its glyphs' coverage (L images), which depend on the text only, and where they go from the
    point the text is drawn at."""

    dx: int
    dy: int
    stroke: Image.Image
    glyphs: Image.Image


def _label(text: str) -> _Label:
    """:func:`_render_label` once per text and thread: FreeType took most of a scale bar's cost
    rendering the same few strings on every panel."""
    labels = getattr(_thread_fonts, "labels", None)
    if labels is None:
        labels = _thread_fonts.labels = {}
    label = labels.get(text)
    if label is None:
        label = labels[text] = _render_label(text, _font())
    return label


def _render_label(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> _Label:
    # ImageDraw.text draws the stroke's coverage in the stroke colour, then the glyphs' in the
    # fill colour; each drawn at full ink on black is that coverage, byte for byte
    left, top, right, bottom = font.getbbox(text, stroke_width=1)
    pad = 8  # room for coverage a font might spill past its box
    at = (pad - int(left), pad - int(top))
    size = (int(right - left) + 2 * pad, int(bottom - top) + 2 * pad)
    masks = []
    for stroke_width in (1, 0):
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).text(
            at, text, font=font, fill=255, stroke_width=stroke_width, stroke_fill=255
        )
        masks.append(mask)
    boxes = [m.getbbox() or (0, 0, 0, 0) for m in masks]
    box = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    return _Label(box[0] - at[0], box[1] - at[1], *(m.crop(box) for m in masks))


def _draw_label(panel: np.ndarray, xy: tuple[int, int], label: _Label) -> None:
    """``ImageDraw.text(xy, text, fill=white, stroke_width=1, stroke_fill=black)`` on an
    (h, w, 3) panel, in place: the cached coverage pasted with Pillow's own compositing, on the
    few pixels it covers rather than the whole panel."""
    height, width = panel.shape[:2]
    x0, y0 = xy[0] + label.dx, xy[1] + label.dy
    x1, y1 = x0 + label.glyphs.width, y0 + label.glyphs.height
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    crop = (cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0)  # clipped at the panel's edges like Pillow
    region = Image.fromarray(np.ascontiguousarray(panel[cy0:cy1, cx0:cx1]), mode="RGB")
    for mask, ink in ((label.stroke, (0, 0, 0)), (label.glyphs, (255, 255, 255))):
        region.paste(ink, (0, 0), mask if crop == (0, 0, *mask.size) else mask.crop(crop))
    panel[cy0:cy1, cx0:cx1] = np.asarray(region)


def distance_label(metres: float) -> str:
    """``200 m``, ``2 km``: a scale bar's length as it is written."""
    return f"{metres:g} m" if metres < 1000 else f"{metres / 1000:g} km"


class ChipImages(NamedTuple):
    """The three chips of one patch, each (h, w, 3) uint8."""

    before: np.ndarray
    after: np.ndarray
    change: np.ndarray


def render_chips(data: np.ndarray, own: np.ndarray, metres_per_px: float, size: int) -> ChipImages:
    """The chips of one patch from its window of the preview raster (:data:`PREVIEW_BANDS`, y, x)
    and its pixels in that window, all upscaled by the same whole factor to at least `size` px,
    with the outline drawn just outside the patch's pixels (the changed pixels stay visible) and
    a scale bar:

    - before and after: the true-colour panel and the false-colour panel side by side;
    - change: the NDVI change (after - before) on the fixed palette of
      :func:`~changedetect.io.sinks.ndvi_change.change_rgb`, the outline edged in dark, then its
      legend where the others have their false-colour panel."""
    zoom = _zoom(data, size)
    inside = _upscale(own, zoom)
    ringed = _dilate(inside)
    # the rings as indices: a few hundred pixels, set on five panels
    outline = np.nonzero(ringed & ~inside)
    edge = np.nonzero(_dilate(ringed) & ~ringed)
    metres_per_display_px = metres_per_px / zoom
    true_pair = _stretch(data[0:3], data[3:6])
    false_pair = _stretch(data[[6, 7, 0]], data[[8, 9, 3]])
    dates = []
    for true, false in zip(true_pair, false_pair, strict=True):
        chip, panels = _two_panels(inside.shape)
        for img, panel in zip((true, false), panels, strict=True):
            _upscale_into(img, zoom, panel)
            panel[outline] = OUTLINE_RGB
            _scale_bar(panel, metres_per_display_px)
        dates.append(chip)
    change, (panel, legend) = _two_panels(inside.shape)
    _upscale_into(change_rgb(preview_ndvi_change(data)), zoom, panel)
    panel[edge] = OUTLINE_EDGE_RGB
    panel[outline] = OUTLINE_RGB
    _scale_bar(panel, metres_per_display_px)
    legend[...] = _change_legend(*inside.shape[::-1])
    return ChipImages(dates[0], dates[1], change)


@functools.lru_cache(maxsize=32)
def _change_legend(width: int, height: int) -> np.ndarray:
    """The change chip's legend on white: what is shown, the colour ramp from -limit to +limit
    with its ends and middle labelled, and the no-data grey. A short panel gets the ramp and
    its labels only. The same for every chip of a size: drawn once (read-only)."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.font = _font()
    margin = max(4, width // 16)
    ramp_w, ramp_h = width - 2 * margin, max(8, height // 14)
    full = height >= 96
    y = (height - (ramp_h + (70 if full else 14))) // 2
    if full:
        draw.text((margin, y), "NDVI change", fill=LEGEND_INK)
        draw.text((margin, y + 13), "after - before", fill=LEGEND_INK)
        y += 30
    ramp = change_rgb(np.linspace(-CHANGE_LIMIT, CHANGE_LIMIT, ramp_w, dtype=np.float32))
    image.paste(Image.fromarray(np.repeat(ramp[None], ramp_h, axis=0), mode="RGB"), (margin, y))
    draw.rectangle((margin - 1, y - 1, margin + ramp_w, y + ramp_h), outline=LEGEND_INK)
    y += ramp_h + 3
    labels = (f"-{CHANGE_LIMIT:g}", "0", f"+{CHANGE_LIMIT:g}")
    for label, x in zip(labels, (margin, width / 2, width - margin), strict=True):
        anchor = "la" if x == margin else "ra" if x == width - margin else "ma"
        draw.text((x, y), label, fill=LEGEND_INK, anchor=anchor)
    if full:
        y += 13
        draw.text((margin, y), "loss", fill=LEGEND_INK, anchor="la")
        draw.text((width - margin, y), "gain", fill=LEGEND_INK, anchor="ra")
        y += 18
        draw.rectangle((margin, y, margin + 10, y + 9), fill=NO_DATA_RGB, outline=LEGEND_INK)
        draw.text((margin + 15, y), "no data", fill=LEGEND_INK)
    legend = np.asarray(image)
    legend.flags.writeable = False
    return legend


def _zoom(data: np.ndarray, size: int) -> int:
    """The whole factor a window is upscaled by to reach `size` px at least."""
    return max(1, math.ceil(size / data.shape[1]))


def _dilate(mask: np.ndarray) -> np.ndarray:
    """`mask` grown by one pixel in all eight directions (``ndimage.binary_dilation`` with a 3x3
    square): the same pixels from four shifted ORs, without scipy's general machinery."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _upscale(image: np.ndarray, zoom: int) -> np.ndarray:
    """Each pixel of a (y, x, ...) image as a `zoom` x `zoom` block."""
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def _upscale_into(image: np.ndarray, zoom: int, out: np.ndarray) -> None:
    """:func:`_upscale` of an image written into `out` (a panel of its chip): widened once, then
    copied row by row, rather than repeated byte by byte along both axes and copied again to
    put the panels side by side."""
    wide = np.repeat(image, zoom, axis=1)
    for dy in range(zoom):
        out[dy::zoom] = wide


def _two_panels(shape: tuple[int, int]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A chip of two panels of `shape` side by side, white between them, and the panels (views
    of it, to draw on)."""
    height, width = shape
    chip = np.empty((height, 2 * width + PANEL_GAP, 3), np.uint8)
    chip[:, width : width + PANEL_GAP] = 255
    return chip, (chip[:, :width], chip[:, width + PANEL_GAP :])


def png_workers() -> int:
    """Threads that encode the report's PNGs: zlib releases the GIL, and encoding is most of an
    image's cost."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


#: Patches whose chips one dask task renders: a patch takes about 9 ms (render, quantise,
#: encode three chips), so a task of 16 outweighs its scheduling (about 1 ms on threads, a few on
#: a cluster) while the windows it carries stay a few hundred kB.
CHIP_BATCH = 16
#: Tasks handed to dask at once: enough to keep a cluster's or the machine's threads busy, few
#: enough that memory stays flat however many patches there are.
TASKS_AT_ONCE = 16


class ChipFiles(NamedTuple):
    """The chip files of one patch."""

    before: Path
    after: Path
    change: Path


def chip_pngs(
    data: np.ndarray, own: np.ndarray, metres_per_px: float, size: int
) -> tuple[bytes, bytes, bytes]:
    """The before, after and change chips of one patch (:func:`render_chips`) as the bytes of
    their PNG files, encoded as the report embeds them (palette.py): the report takes the files'
    bytes as they are."""
    before, after, change = render_chips(data, own, metres_per_px, size)
    return (
        png_bytes(palette_image(before)),
        png_bytes(palette_image(after)),
        png_bytes(palette_image(change)),
    )


def render_chip_batch(
    windows: list[tuple[np.ndarray, np.ndarray]], metres_per_px: float, size: int
) -> list[tuple[bytes, bytes, bytes]]:
    """:func:`chip_pngs` of each (preview window, patch pixels) pair: one dask task, which needs
    no file, so a cluster's workers run it as well as local threads."""
    return [chip_pngs(data, own, metres_per_px, size) for data, own in windows]


def write_chips(
    preview_path: Path,
    pixels: PatchPixels,
    patches: list[Patch],
    out_dir: Path,
    *,
    size: int,
    metres_per_px: float,
) -> dict[int, ChipFiles]:
    """Write `<label>_before.png` / `_after.png` / `_change.png` (:func:`chip_pngs`) per patch.

    This process reads each patch's window of the preview raster and writes the files; the
    rendering and encoding run as dask tasks of :data:`CHIP_BATCH` patches on dask's current
    scheduler (the local threads, or the workers of a cluster, like the pass). Each file is the
    same whatever the scheduler."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[int, ChipFiles] = {}
    with rasterio.open(preview_path) as src:
        batches = [patches[at : at + CHIP_BATCH] for at in range(0, len(patches), CHIP_BATCH)]
        for first in range(0, len(batches), TASKS_AT_ONCE):
            group = batches[first : first + TASKS_AT_ONCE]
            tasks = [
                dask.delayed(render_chip_batch, pure=True)(
                    [_chip_input(src, pixels, patch) for patch in batch], metres_per_px, size
                )
                for batch in group
            ]
            for batch, pngs in zip(group, dask.compute(*tasks), strict=True):
                for patch, files in zip(batch, pngs, strict=True):
                    paths = ChipFiles(
                        *(out_dir / f"{patch.label:05d}_{which}.png" for which in ChipFiles._fields)
                    )
                    for path, png in zip(paths, files, strict=True):
                        with atomic_path(path) as tmp:
                            tmp.write_bytes(png)
                    written[patch.label] = paths
    return written


def _chip_input(src: Any, pixels: PatchPixels, patch: Patch) -> tuple[np.ndarray, np.ndarray]:
    """A patch's window of the preview raster and which of its pixels are the patch's."""
    window = chip_window(patch, src.height, src.width)
    rows = slice(int(window.row_off), int(window.row_off + window.height))
    cols = slice(int(window.col_off), int(window.col_off + window.width))
    return src.read(window=window), pixels.window(rows, cols) == patch.label
