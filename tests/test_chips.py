"""Chips that show the change: framed on the patch, true and false colour under one stretch for
both dates, the outline around the changed pixels (not over them), a scale bar; and the NDVI
change over the same frame on a fixed palette."""

from __future__ import annotations

import math

import numpy as np
import pytest

from changedetect.io.sinks.chips import (
    FRAME,
    MIN_FRAME_PX,
    OUTLINE_RGB,
    PANEL_GAP,
    PREVIEW_BANDS,
    chip_window,
    preview_bytes,
    preview_ndvi_change,
    render_chips,
)
from changedetect.io.sinks.ndvi_change import CHANGE_STOPS, NO_DATA_RGB, change_rgb
from changedetect.models import Patch


def _patch(r0: int, c0: int, r1: int, c1: int) -> Patch:
    return Patch(1, None, 0.0, (r1 - r0) * (c1 - c0), {}, (r0, c0, r1, c1))


@pytest.mark.parametrize(("extent", "edge"), [(2, MIN_FRAME_PX), (20, math.ceil(FRAME * 20))])
def test_a_chip_frames_its_patch_at_a_few_times_its_extent(extent, edge):
    window = chip_window(_patch(500, 600, 500 + extent, 600 + extent // 2), 2000, 2000)
    assert window.width == window.height == edge
    # centred on the patch
    assert window.row_off + edge / 2 == pytest.approx(500 + extent / 2, abs=1)
    # at the raster's edge it stays inside
    corner = chip_window(_patch(0, 0, extent, extent), 2000, 2000)
    assert (corner.row_off, corner.col_off) == (0, 0)


def _data(edge: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.integers(60, 120, (PREVIEW_BANDS, edge, edge)).astype(np.uint8)
    own = np.zeros((edge, edge), bool)
    own[10:13, 9:14] = True  # a 3 x 5 px patch
    data[3:6][:, own] = 250  # bright after, in true colour
    data[8][own] = 250  # and in SWIR after
    return data, own


def test_the_outline_is_drawn_around_the_changed_pixels_not_over_them():
    data, own = _data()
    before, after, _ = render_chips(data, own, 10.0, 128)
    zoom = math.ceil(128 / 24)
    panel = 24 * zoom
    assert after.shape == (panel, 2 * panel + PANEL_GAP, 3)
    inside = np.kron(own, np.ones((zoom, zoom), bool))
    for chip in (before, after):
        for x0 in (0, panel + PANEL_GAP):
            view = chip[:, x0 : x0 + panel]
            yellow = np.all(view == OUTLINE_RGB, axis=-1)
            assert not (yellow & inside).any()  # every changed pixel still shows
            ring = np.zeros_like(inside)
            ring[10 * zoom - 1 : 13 * zoom + 1, 9 * zoom - 1 : 14 * zoom + 1] = True
            assert np.array_equal(yellow, ring & ~inside)  # one display pixel around it
    # the change is plain to see: bright after, inside the outline, in both panels
    assert after[:, :panel][inside].mean() > before[:, :panel][inside].mean() + 80


def test_both_dates_share_one_stretch():
    data, own = _data()
    data[3:6] = data[0:3]  # after = before in true colour ...
    data[3:6][:, :, :12] = data[0:3][:, :, :12] // 2  # ... but half as bright on the west
    before, after, _ = render_chips(data, own, 10.0, 24)
    east = (slice(0, 24), slice(14, 22))
    # the unchanged east side comes out alike; a separate stretch per date would move it
    assert np.array_equal(before[east], after[east])
    assert after[:, :10].mean() < before[:, :10].mean() - 30


def test_the_false_colour_panel_is_swir_nir_red():
    data, own = _data()
    before, after, _ = render_chips(data, own, 10.0, 24)
    false = after[:, 24 + PANEL_GAP :]
    inside = false[own]
    # the patch is bright in SWIR (red channel) and not in NIR (green) after
    assert inside[:, 0].mean() > 200 and inside[:, 0].mean() > inside[:, 1].mean() + 100


def test_a_scale_bar_of_a_round_length_sits_in_the_corner():
    data, own = _data(60)
    own[:] = False
    before, _, _ = render_chips(data, own, 10.0, 60)  # 600 m across: a 100 m bar (10 px)
    bottom = before[-7:-3, :60]
    white = np.all(bottom == 255, axis=-1).any(axis=0)
    assert white[4:15].all() and not white[20:].any()


def test_the_preview_keeps_no_data_apart():
    before = np.full((6, 2, 2), 0.1, np.float32)
    after = before.copy()
    after[:, 0, 0] = np.nan
    preview = preview_bytes(before, after)
    assert preview.shape == (PREVIEW_BANDS, 2, 2) and preview.dtype == np.uint8
    assert (preview[3:6, 0, 0] == 0).all() and (preview[8:10, 0, 0] == 0).all()
    assert (preview[:, 1, 1] > 0).all()


# --- the NDVI change ---------------------------------------------------------------------------

#: Preview bytes and the reflectance they stand for (sqrt stretch, 1-255): 128 is half way up the
#: square root, a quarter of the top; 255 the top itself (or anything brighter, clipped).
RED_QUARTER, RED_TOP = 0.25 * 0.3, 0.3  # VISIBLE_TOP
NIR_QUARTER, NIR_TOP = 0.25 * 0.5, 0.5  # INFRARED_TOP


def _ndvi(red: float, nir: float) -> float:
    return (nir - red) / (nir + red)


def _tiny_preview() -> np.ndarray:
    """Four pixels: vegetation lost, vegetation gained, a moderate loss, no data after."""
    data = np.full((PREVIEW_BANDS, 1, 4), 100, np.uint8)
    # bands: 0 red before, 3 red after, 7 NIR before, 9 NIR after
    data[[0, 7, 3, 9], 0, 0] = (128, 255, 255, 128)  # green field -> bare ground
    data[[0, 7, 3, 9], 0, 1] = (255, 128, 128, 255)  # bare ground -> green field
    data[[0, 7, 3, 9], 0, 2] = (128, 255, 128, 128)  # thinned
    data[9, 0, 3] = 0  # no NIR after
    return data


def test_the_ndvi_change_is_read_back_from_the_preview_bytes():
    change = preview_ndvi_change(_tiny_preview())
    lost = _ndvi(RED_TOP, NIR_QUARTER) - _ndvi(RED_QUARTER, NIR_TOP)  # -0.4118 - 0.7391
    gained = _ndvi(RED_QUARTER, NIR_TOP) - _ndvi(RED_TOP, NIR_QUARTER)
    thinned = _ndvi(RED_QUARTER, NIR_QUARTER) - _ndvi(RED_QUARTER, NIR_TOP)  # 0.25 - 0.7391
    assert change.shape == (1, 4)
    assert change[0, :3] == pytest.approx([lost, gained, thinned], abs=1e-6)
    assert lost == pytest.approx(-1.1509, abs=1e-4) and thinned == pytest.approx(-0.4891, abs=1e-4)
    assert np.isnan(change[0, 3])


def test_the_ndvi_change_survives_the_preview_stretch():
    # forest (red 0.03, NIR 0.35) cleared to soil (red 0.2, NIR 0.25): the bytes keep the change
    before = np.zeros((6, 1, 1), np.float32)
    before[:, 0, 0] = (0.03, 0.05, 0.03, 0.35, 0.15, 0.08)  # B02 B03 B04 B08 B11 B12
    after = before.copy()
    after[:, 0, 0] = (0.15, 0.17, 0.2, 0.25, 0.3, 0.28)
    change = preview_ndvi_change(preview_bytes(before, after))
    assert change[0, 0] == pytest.approx(_ndvi(0.2, 0.25) - _ndvi(0.03, 0.35), abs=0.01)


def test_the_palette_is_brown_for_loss_green_for_gain_grey_for_no_data():
    rgb = change_rgb(preview_ndvi_change(_tiny_preview()))
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    lost, gained, thinned, missing = (tuple(int(v) for v in rgb[0, i]) for i in range(4))
    # beyond the fixed scale the ends of the palette: red-brown and dark green
    assert lost == CHANGE_STOPS[0][1] and gained == CHANGE_STOPS[-1][1]
    assert lost[0] > lost[1] + 50 > lost[2] + 50  # red over green over blue: brown
    assert gained[1] > gained[0] + 50 and gained[1] > gained[2] + 50
    # a loss short of the scale's end is still a loss colour, and lighter than a clearing
    assert thinned[0] > thinned[1] + 50 and sum(thinned) > sum(lost)
    assert missing == NO_DATA_RGB
    # near zero is pale; the same change is the same colour on every chip
    assert min(change_rgb(np.array([0.02]))[0]) > 200
    assert np.array_equal(change_rgb(np.array([-0.3, 0.3])), change_rgb(np.array([-0.3, 0.3])))
    assert tuple(change_rgb(np.array([-0.9]))[0]) == CHANGE_STOPS[0][1]


def test_the_change_chip_frames_the_patch_like_the_others():
    data, own = _data()
    # the patch was vegetated before (NIR high, red low) and is bare after
    data[0][own], data[7][own] = 90, 230
    data[3][own], data[9][own] = 250, 120
    before, _, change = render_chips(data, own, 10.0, 128)
    assert change.shape == before.shape  # the same size: the cards line the three chips up
    zoom = math.ceil(128 / 24)
    panel = 24 * zoom
    inside = np.kron(own, np.ones((zoom, zoom), bool))
    # the outline on the same pixels as the before/after chips', never over the change
    yellow = np.all(change[:, :panel] == OUTLINE_RGB, axis=-1)
    assert np.array_equal(yellow, np.all(before[:, :panel] == OUTLINE_RGB, axis=-1))
    assert not (yellow & inside).any()
    # the patch in loss colours
    patch_rgb = change[:, :panel][inside].astype(int)
    assert (patch_rgb[:, 0] > patch_rgb[:, 1] + 50).all()
    # the legend where the false colour is: white, the palette's ramp and no outline
    legend = change[:, panel + PANEL_GAP :]
    assert legend.shape == (panel, panel, 3)
    assert not np.all(legend == OUTLINE_RGB, axis=-1).any()
    colours = {tuple(int(v) for v in px) for px in legend.reshape(-1, 3)}
    assert {CHANGE_STOPS[0][1], CHANGE_STOPS[-1][1], NO_DATA_RGB, (255, 255, 255)} <= colours
    # and a scale bar in the corner of the change panel
    assert np.all(change[-7:-3, 4:15] == 255, axis=-1).any(axis=0).all()


def test_the_compiled_preview_is_numpys_to_the_byte():
    from changedetect.io.sinks.chips import _preview_numpy

    rng = np.random.default_rng(5)
    before, after = (rng.uniform(-0.1, 0.8, (6, 61, 47)).astype(np.float32) for _ in range(2))
    before[:, 3:9, 4:20] = np.nan
    after[2, 10:12, :] = np.inf
    after[3, 20:22, :] = -np.inf
    before[1, 30, :] = np.float32(0.3)  # exactly the top
    after[5, 40, :] = np.nextafter(np.float32(0.5), np.float32(0))
    fast, slow = preview_bytes(before, after), _preview_numpy(before, after)
    assert fast.dtype == slow.dtype == np.uint8 and fast.shape == slow.shape
    assert np.array_equal(fast, slow)
    assert len(np.unique(fast)) > 200
    grid = np.linspace(-0.1, 0.6, 6 * 64 * 64, dtype=np.float32).reshape(6, 64, 64)
    assert np.array_equal(preview_bytes(grid, grid[::-1]), _preview_numpy(grid, grid[::-1]))


def test_the_preview_of_a_block_trimmed_out_of_its_halo_is_that_of_its_copy():
    # the pass hands the preview views cut out of a larger block, not arrays of their own
    rng = np.random.default_rng(6)
    before, after = (rng.uniform(0.0, 0.6, (6, 70, 66)).astype(np.float32) for _ in range(2))
    view_b, view_a = before[:, 5:-5, 4:-4], after[:, 5:-5, 4:-4]
    assert not view_b.flags.c_contiguous
    expected = preview_bytes(view_b.copy(), view_a.copy())
    assert np.array_equal(preview_bytes(view_b, view_a), expected)
    assert expected.shape == (10, 60, 58)


# --- the same chips, cheaper: each shortcut against what it stands for ---------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 49, 50, 51, 100, 101, 1000, 20_001])
def test_percentiles_from_byte_counts_are_numpys_to_the_bit(size):
    from changedetect.io.sinks.chips import byte_percentiles

    rng = np.random.default_rng(size)
    percentiles = (0.0, 2.0, 25.0, 49.9, 50.0, 75.0, 98.0, 100.0)
    samples = [
        rng.integers(0, 256, size),
        rng.integers(60, 64, size),  # few values: ties across every rank
        np.full(size, 255),
        np.where(rng.random(size) < 0.5, 0, 255),
        rng.binomial(255, 0.1, size),
    ]
    for values in samples:
        values = values.astype(np.uint8)
        ours = np.array(byte_percentiles(np.bincount(values, minlength=256), percentiles))
        numpys = np.percentile(values, percentiles)
        assert ours.dtype == numpys.dtype == np.float64
        assert np.array_equal(ours.view(np.uint64), numpys.view(np.uint64)), (values, ours, numpys)


def _stretch_by_percentile(before, after):
    """The stretch as it is defined: np.percentile of the pixels with data of both dates, per
    channel, each pixel mapped onto 1-255 (0 where no data)."""
    valid = [(img[0] > 0) | (img[1] > 0) | (img[2] > 0) for img in (before, after)]
    low, high = [], []
    for c in range(3):
        values = np.concatenate([before[c][valid[0]], after[c][valid[1]]])
        lo, hi = np.percentile(values, (2.0, 98.0)) if values.size else (0.0, 255.0)
        low.append(lo)
        high.append(max(hi, lo + 1.0))
    lo_a, hi_a = np.asarray(low)[:, None, None], np.asarray(high)[:, None, None]
    out = []
    for img, ok in zip((before, after), valid, strict=True):
        scaled = np.clip((img - lo_a) / (hi_a - lo_a) * 254.0 + 1.0, 1.0, 255.0)
        out.append(np.moveaxis(np.where(ok, scaled, 0).astype(np.uint8), 0, -1))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_stretch_by_tables_is_the_stretch_pixel_by_pixel(seed):
    from changedetect.io.sinks.chips import _stretch

    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, 2)
    before, after = (rng.integers(0, 256, (3, h, w)).astype(np.uint8) for _ in range(2))
    if seed % 2:  # narrow values: the percentiles fall between ties
        before, after = before // 40 + 70, after // 50 + 60
    before[:, rng.random((h, w)) < 0.2] = 0  # no data
    after[0, rng.random((h, w)) < 0.2] = 0  # a band at 0 with data in the others
    cases = [(before, after), (before, np.zeros_like(after)), (np.zeros_like(before),) * 2]
    cases.append((np.full_like(before, 90), np.full_like(after, 90)))  # flat: lo + 1
    for b, a in cases:
        ours, expected = _stretch(b, a), _stretch_by_percentile(b, a)
        for got, want in zip(ours, expected, strict=True):
            assert got.dtype == np.uint8 and np.array_equal(got, want)


def _pillow_scale_bar(image, metres_per_px):
    """The scale bar as ImageDraw draws it: the rectangles, then the text with its stroke."""
    from PIL import ImageDraw

    from changedetect.io.sinks.chips import SCALE_BAR_M, _font, distance_label

    width, height = image.size
    fits = [m for m in SCALE_BAR_M if m / metres_per_px <= width * 0.3]
    if not fits or height < 48:
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


def test_a_cached_label_draws_the_pixels_pillow_draws():
    from PIL import Image, ImageDraw

    from changedetect.io.sinks.chips import SCALE_BAR_M, _draw_label, _font, _label, distance_label

    rng = np.random.default_rng(7)
    for text in {distance_label(m) for m in SCALE_BAR_M}:
        # anywhere on the panel, and cut off at each of its edges
        for xy in [(4, 30), (0, 0), (-9, 5), (5, -7), (30, 40), (45, 12), (-40, -40), (60, 60)]:
            panel = rng.integers(0, 256, (48, 52, 3)).astype(np.uint8)
            panel[10:30, 5:25] = (255, 230, 0)  # flat colours, too
            expected = Image.fromarray(panel.copy(), mode="RGB")
            ImageDraw.Draw(expected).text(
                xy, text, font=_font(), fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0)
            )
            _draw_label(panel, xy, _label(text))
            assert np.array_equal(panel, np.asarray(expected)), (text, xy)


@pytest.mark.parametrize(
    ("edge", "metres_per_px"), [(48, 10.0), (204, 5.0), (130, 0.5), (96, 80.0)]
)
def test_the_scale_bar_is_pillows_to_the_pixel(edge, metres_per_px):
    from PIL import Image

    from changedetect.io.sinks.chips import _scale_bar

    rng = np.random.default_rng(edge)
    panel = rng.integers(0, 256, (edge, edge, 3)).astype(np.uint8)
    original = panel.copy()
    expected = Image.fromarray(panel.copy(), mode="RGB")
    _pillow_scale_bar(expected, metres_per_px)
    _scale_bar(panel, metres_per_px)
    assert np.array_equal(panel, np.asarray(expected))
    assert not np.array_equal(panel, original)  # a bar was drawn


def test_the_ring_is_scipys_dilation():
    from scipy import ndimage

    from changedetect.io.sinks.chips import _dilate

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 7), (5, 1), (24, 24), (37, 51)]:
        for density in (0.0, 0.02, 0.3, 1.0):
            mask = rng.random(shape) < density
            mask[0, -1] = density > 0.1  # at a corner and the edges, too
            expected = ndimage.binary_dilation(mask, np.ones((3, 3), bool))
            assert np.array_equal(_dilate(mask), expected)


@pytest.mark.parametrize("zoom", [1, 2, 3, 5])
def test_a_panel_upscaled_in_place_is_the_upscaled_image(zoom):
    from changedetect.io.sinks.chips import _two_panels, _upscale, _upscale_into

    rng = np.random.default_rng(zoom)
    left, right = (rng.integers(0, 256, (7, 7, 3)).astype(np.uint8) for _ in range(2))
    chip, panels = _two_panels((7 * zoom, 7 * zoom))
    for image, panel in zip((left, right), panels, strict=True):
        _upscale_into(image, zoom, panel)
    gap = np.full((7 * zoom, PANEL_GAP, 3), 255, np.uint8)
    expected = np.concatenate([_upscale(left, zoom), gap, _upscale(right, zoom)], axis=1)
    assert np.array_equal(chip, expected)
    assert np.array_equal(_upscale(left, zoom), np.kron(left, np.ones((zoom, zoom, 1), np.uint8)))


def test_the_outline_slot_takes_exactly_the_outline_coloured_pixels():
    from changedetect.io.sinks.palette import SLOT_OUTLINE, palette_image

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    rgb[5, :] = OUTLINE_RGB
    rgb[:, 7] = OUTLINE_RGB
    rgb[9, 3] = (255, 230, 1)  # one off in each channel: not outline
    rgb[9, 4] = (254, 230, 0)
    rgb[9, 5] = (255, 231, 0)
    outline = np.all(rgb == OUTLINE_RGB, axis=-1)
    assert np.array_equal(np.asarray(palette_image(rgb)) == SLOT_OUTLINE, outline)
    plain = rgb.copy()
    plain[outline] = (0, 0, 255)
    assert not (np.asarray(palette_image(plain)) == SLOT_OUTLINE).any()
