"""Chips that show the change: framed on the patch, true and false colour under one stretch for
both dates, the outline around the changed pixels (not over them), a scale bar."""

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
    render_chips,
)
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
    before, after = render_chips(data, own, 10.0, 128)
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
    before, after = render_chips(data, own, 10.0, 24)
    east = (slice(0, 24), slice(14, 22))
    # the unchanged east side comes out alike; a separate stretch per date would move it
    assert np.array_equal(before[east], after[east])
    assert after[:, :10].mean() < before[:, :10].mean() - 30


def test_the_false_colour_panel_is_swir_nir_red():
    data, own = _data()
    before, after = render_chips(data, own, 10.0, 24)
    false = after[:, 24 + PANEL_GAP :]
    inside = false[own]
    # the patch is bright in SWIR (red channel) and not in NIR (green) after
    assert inside[:, 0].mean() > 200 and inside[:, 0].mean() > inside[:, 1].mean() + 100


def test_a_scale_bar_of_a_round_length_sits_in_the_corner():
    data, own = _data(60)
    own[:] = False
    (before, _) = render_chips(data, own, 10.0, 60)  # 600 m across: a 100 m bar (10 px)
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
