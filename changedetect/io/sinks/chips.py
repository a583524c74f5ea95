"""Before/after PNG chips per clue, for analysts to check a change on: framed on the patch,
true colour and false colour (SWIR-NIR-red) side by side under one stretch for both dates, the
outline drawn around the changed pixels, not over them, and a scale bar."""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.windows import Window
from scipy import ndimage

from ...models import Patch
from ...types import ANALYSIS_BANDS
from ..atomic import atomic_path

OUTLINE_RGB = (255, 230, 0)

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


def _to_byte(reflectance: np.ndarray, top: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        scaled = np.sqrt(np.clip(reflectance / top, 0.0, 1.0)) * 254.0 + 1.0
    return np.where(np.isfinite(reflectance), scaled, 0).astype(np.uint8)


def preview_bytes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The preview of a block from its (band, y, x) before and after reflectance: the
    :data:`PREVIEW_BANDS` uint8 bands, 0 where there is no data."""
    return np.concatenate(
        [
            _to_byte(before[_TRUE], VISIBLE_TOP),
            _to_byte(after[_TRUE], VISIBLE_TOP),
            _to_byte(before[_INFRARED], INFRARED_TOP),
            _to_byte(after[_INFRARED], INFRARED_TOP),
        ]
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
    valid = [np.any(img > 0, axis=0) for img in (before, after)]
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
        fill=(255, 255, 255),
        stroke_width=1,
        stroke_fill=(0, 0, 0),
    )


def distance_label(metres: float) -> str:
    """``200 m``, ``2 km``: a scale bar's length as it is written."""
    return f"{metres:g} m" if metres < 1000 else f"{metres / 1000:g} km"


def render_chips(
    data: np.ndarray, own: np.ndarray, metres_per_px: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The before and after chips of one patch from its window of the preview raster
    (:data:`PREVIEW_BANDS`, y, x) and its pixels in that window: each (h, w, 3) uint8, the
    true-colour panel and the false-colour panel side by side, upscaled by a whole factor to at
    least `size` px, with the outline drawn just outside the patch's pixels (the changed pixels
    stay visible) and a scale bar."""
    edge = data.shape[1]
    zoom = max(1, math.ceil(size / edge))
    inside = np.kron(own, np.ones((zoom, zoom), bool))
    outline = ndimage.binary_dilation(inside, np.ones((3, 3), bool)) & ~inside
    true_pair = _stretch(data[0:3], data[3:6])
    false_pair = _stretch(data[[6, 7, 0]], data[[8, 9, 3]])
    chips = []
    for true, false in zip(true_pair, false_pair, strict=True):
        panels = []
        for img in (true, false):
            up = np.repeat(np.repeat(np.moveaxis(img, 0, -1), zoom, axis=0), zoom, axis=1)
            up[outline] = OUTLINE_RGB
            panel = Image.fromarray(np.ascontiguousarray(up), mode="RGB")
            _scale_bar(panel, metres_per_px / zoom)
            panels.append(np.asarray(panel))
        gap = np.full((panels[0].shape[0], PANEL_GAP, 3), 255, np.uint8)
        chips.append(np.concatenate([panels[0], gap, panels[1]], axis=1))
    return chips[0], chips[1]


def png_workers() -> int:
    """Threads that encode PNGs: zlib releases the GIL, and encoding is most of a chip's cost
    (about 5 ms of a 128 px chip against well under 1 ms to read and outline it)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _save_chip(img: np.ndarray, target: Path) -> Path:
    with atomic_path(target) as tmp:
        Image.fromarray(img, mode="RGB").save(tmp, format="PNG")
    return target


def write_chips(
    preview_path: Path,
    labels: np.ndarray,
    patches: list[Patch],
    out_dir: Path,
    *,
    size: int,
    metres_per_px: float,
) -> dict[int, tuple[Path, Path]]:
    """Write `<label>_before.png` / `_after.png` per patch (:func:`render_chips`) from the
    preview raster.

    Windows are read one after the other (a dataset handle is not shared between threads) and
    the chips rendered and encoded on :func:`png_workers` threads; each file is the same
    whatever the order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[int, tuple[Path, Path]] = {}
    workers = png_workers()
    pending: deque[Future[tuple[Path, Path]]] = deque()
    with rasterio.open(preview_path) as src, ThreadPoolExecutor(workers, "chips") as pool:
        for patch in patches:
            window = chip_window(patch, src.height, src.width)
            data = src.read(window=window)
            rows = slice(int(window.row_off), int(window.row_off + window.height))
            cols = slice(int(window.col_off), int(window.col_off + window.width))
            own = labels[rows, cols] == patch.label
            paths = (
                out_dir / f"{patch.label:05d}_before.png",
                out_dir / f"{patch.label:05d}_after.png",
            )
            pending.append(pool.submit(_render_and_save, data, own, metres_per_px, size, paths))
            written[patch.label] = paths
            # a few chips in flight per thread: memory stays flat however many patches
            while len(pending) > 4 * workers:
                pending.popleft().result()
        for future in pending:
            future.result()
    return written


def _render_and_save(
    data: np.ndarray, own: np.ndarray, metres_per_px: float, size: int, paths: tuple[Path, Path]
) -> tuple[Path, Path]:
    before, after = render_chips(data, own, metres_per_px, size)
    return _save_chip(before, paths[0]), _save_chip(after, paths[1])
