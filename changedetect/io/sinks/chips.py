"""Before/after PNG chips per clue, for analysts to check a change on: framed on the patch,
true colour and false colour (SWIR-NIR-red) side by side under one stretch for both dates, the
outline drawn around the changed pixels, not over them, and a scale bar. A third chip shows the
NDVI change over the same frame on a fixed diverging palette, with its legend beside it."""

from __future__ import annotations

import functools
import math
import os
import threading
from pathlib import Path
from typing import Any, NamedTuple

import dask
import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.windows import Window
from scipy import ndimage

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
    """Both (3, y, x) byte images stretched per channel by the same percentiles of the two."""
    out = []
    valid = [(img[0] > 0) | (img[1] > 0) | (img[2] > 0) for img in (before, after)]
    low, high = [], []
    for c in range(3):
        values = np.concatenate([before[c][valid[0]], after[c][valid[1]]])
        lo, hi = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 255.0)
        low.append(lo)
        high.append(max(hi, lo + 1.0))
    lo_a, hi_a = np.asarray(low)[:, None, None], np.asarray(high)[:, None, None]
    for img, ok in zip((before, after), valid, strict=True):
        scaled = np.clip((img - lo_a) / (hi_a - lo_a) * 254.0 + 1.0, 1.0, 255.0)
        out.append(np.where(ok, scaled, 0).astype(np.uint8))
    return out[0], out[1]


def _scale_bar(image: Image.Image, metres_per_px: float) -> None:
    """A scale bar of a round length, about a quarter of the width, in the bottom-left corner."""
    width, height = image.size
    fits = [m for m in SCALE_BAR_M if m / metres_per_px <= width * 0.3]
    if not fits or height < 48:  # a tiny panel has no room for it beside the patch
        return
    metres = fits[-1]
    length = round(metres / metres_per_px)
    draw = ImageDraw.Draw(image)
    x0, y1 = 4, height - 4
    draw.rectangle((x0 - 1, y1 - 4, x0 + length + 1, y1 + 1), fill=(0, 0, 0))
    draw.rectangle((x0, y1 - 3, x0 + length, y1), fill=(255, 255, 255))
    draw.text(
        (x0, y1 - 16),
        distance_label(metres),
        font=_font(),
        fill=(255, 255, 255),
        stroke_width=1,
        stroke_fill=(0, 0, 0),
    )


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
    inside, outline = _outline(own, zoom)
    metres_per_display_px = metres_per_px / zoom
    true_pair = _stretch(data[0:3], data[3:6])
    false_pair = _stretch(data[[6, 7, 0]], data[[8, 9, 3]])
    dates = []
    for true, false in zip(true_pair, false_pair, strict=True):
        panels = []
        for img in (true, false):
            up = _upscale(np.moveaxis(img, 0, -1), zoom)
            up[outline] = OUTLINE_RGB
            panel = Image.fromarray(np.ascontiguousarray(up), mode="RGB")
            _scale_bar(panel, metres_per_display_px)
            panels.append(np.asarray(panel))
        dates.append(_side_by_side(panels[0], panels[1]))
    ringed = inside | outline
    edge = ndimage.binary_dilation(ringed, np.ones((3, 3), bool)) & ~ringed
    up = _upscale(change_rgb(preview_ndvi_change(data)), zoom)
    up[edge] = OUTLINE_EDGE_RGB
    up[outline] = OUTLINE_RGB
    panel = Image.fromarray(np.ascontiguousarray(up), mode="RGB")
    _scale_bar(panel, metres_per_display_px)
    change = _side_by_side(np.asarray(panel), _change_legend(*panel.size))
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


def _outline(own: np.ndarray, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """The patch's pixels upscaled, and the one display pixel ring just outside them."""
    inside = np.kron(own, np.ones((zoom, zoom), bool))
    return inside, ndimage.binary_dilation(inside, np.ones((3, 3), bool)) & ~inside


def _upscale(rgb: np.ndarray, zoom: int) -> np.ndarray:
    return np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    gap = np.full((left.shape[0], PANEL_GAP, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def png_workers() -> int:
    """Threads that encode the report's PNGs: zlib releases the GIL, and encoding is most of an
    image's cost."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


#: Patches whose chips one dask task renders: a patch takes about 15 ms (render, quantise,
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
