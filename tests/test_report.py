"""report.html: right content and counts, escaped text, self-contained, and offline in a browser."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from markupsafe import escape
from odc.geo.geobox import GeoBox
from PIL import Image
from shapely.geometry import MultiPolygon, box

from changedetect import __version__
from changedetect.errors import GridMismatchError, SinkError
from changedetect.grids import projected_pixel_area_m2
from changedetect.io.sinks import report
from changedetect.io.sinks.chips import OUTLINE_RGB, PANEL_GAP, chip_window
from changedetect.io.sinks.overview import render_overview
from changedetect.io.sinks.palette import png_data_uri
from changedetect.io.sinks.report import write_report
from changedetect.io.sinks.report_chips import CardChips
from changedetect.models import Patch, PatchClue, TimeWindow
from changedetect.pipeline import AnalysisOptions, analyse
from changedetect.testing.memory import MemorySource
from changedetect.testing.rasters import write_multiband
from tests.factories import AFTER_DAY, BEFORE_DAY, ROCK, forest_scene, make_grid, paint

from .browser import browser_page

BEFORE = ["2024-04-01", "2024-06-30"]
AFTER = ["2025-04-01", "2025-06-30"]
#: Clue text that must come out as text, never as markup or as a request.
NASTY_ZONE = "Zone <b>\"A\"</b> & 'core' <script>alert(1)</script>"
NASTY_COUNTY = '<img src="https://evil.example/x.png"> Hu&yi'

#: (pixel box row0, col0, row1, col1, change type, zone, tier, county, priority)
SPECS = [
    (10, 10, 22, 30, "quarry", NASTY_ZONE, "core", NASTY_COUNTY, "urgent"),
    (40, 60, 52, 70, "construction", "Qinling general", "general", "Zhouzhi", "high"),
    (80, 100, 95, 130, "quarry", "Qinling general", "general", "Zhouzhi", "high"),
    (100, 20, 110, 28, "vegetation_loss", None, None, None, "normal"),
]


def _rgb(grid: GeoBox, path: Path, seed: int = 0) -> Path:
    """A uint8 preview raster like the pipeline's rgb.tif (before/after RGB, then SWIR and NIR)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: grid.height, : grid.width]
    base = (60 + 40 * np.sin(xx / 17.0) * np.cos(yy / 23.0)).astype(np.int16)
    bands = {}
    for i, offset in enumerate((0, 30, -10, 5, 35, -5, 50, 70, 55, 75)):
        noise = rng.integers(0, 12, grid.shape.yx)
        bands[f"b{i + 1}"] = np.clip(base + offset + noise, 1, 255).astype(np.uint8)
    return write_multiband(path, bands, grid)


def _patch(grid: GeoBox, label: int, r0: int, c0: int, r1: int, c1: int) -> Patch:
    t = grid.transform
    geom = box(t.c + c0 * t.a, t.f + r1 * t.e, t.c + c1 * t.a, t.f + r0 * t.e)
    n = (r1 - r0) * (c1 - c0)
    return Patch(label, geom, n * projected_pixel_area_m2(grid), n, {}, (r0, c0, r1, c1))


def _clue(i: int, spec: tuple, patch: Patch) -> PatchClue:
    _, _, _, _, kind, zone, tier, county, priority = spec
    return PatchClue(
        clue_id=f"t-20250630-{i:08x}",
        aoi="t",
        detected_at="2025-06-23",
        before=BEFORE,
        after=AFTER,
        geometry_wgs84=None,
        area_m2=patch.area_m2,
        centroid=(108.123456789, 34.987654321),
        change_type=kind,
        confidence=0.91,
        confidence_level="high",
        d_ndvi=-0.41,
        d_bsi=0.22,
        d_ndbi=float("nan"),
        zone=zone,
        zone_tier=tier,
        county=county,
        priority=priority,
    )


def _scene(tmp_path: Path, specs: list[tuple] = SPECS, shape: tuple[int, int] = (120, 160)):
    grid = make_grid(*shape)
    rgb = _rgb(grid, tmp_path / "rgb.tif")
    patches = [_patch(grid, i + 1, *s[:4]) for i, s in enumerate(specs)]
    clues = [_clue(i, s, p) for i, (s, p) in enumerate(zip(specs, patches, strict=True))]
    return grid, rgb, patches, clues


class _Page(HTMLParser):
    """What a test needs from the page: tags, text, tables by id, cards, image sources."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.cards: list[str] = []  # text of each element with class "clue"
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._card_depth = 0
        self._depth = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag in ("img", "meta", "link", "br", "hr", "input"):
            return  # void elements have no end tag
        self._depth += 1
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        if "clue" in a.get("class", "").split():
            self.cards.append("")
            self._card_depth = self._depth

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        if self._depth == self._card_depth:
            self._card_depth = 0
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._card_depth:
            self.cards[-1] += data + " "  # a gap between elements, as a reader sees it

    def srcs(self) -> list[str]:
        return [a["src"] for t, a in self.tags if t == "img"]

    def table_rows(self, table_id: str) -> dict[tuple[str, ...], tuple[int, str]]:
        """Body rows of a summary table: label cells -> (count, area ha)."""
        rows = self.tables[table_id][1:-1]  # header and total rows off
        return {tuple(r[:-2]): (int(r[-2]), r[-1]) for r in rows}


def _image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))


def _write(tmp_path: Path, **kwargs) -> tuple[str, _Page]:
    grid, rgb, patches, clues = _scene(tmp_path)
    args = {"aoi": "t", "clues": clues, "patches": patches, "grid": grid, "rgb_path": rgb}
    path = write_report(tmp_path / "out" / "report.html", **(args | kwargs))
    text = path.read_text(encoding="utf-8")
    return text, _Page(text)


# ------------------------------------------------------------------------------------ content


def test_clues_come_in_review_order_priority_then_confidence(tmp_path):
    grid, rgb, patches, clues = _scene(tmp_path)
    # spatial order as the pipeline makes them: low, normal, high (0.5), high (0.9), urgent
    for clue, (priority, confidence) in zip(
        clues, [("low", 0.9), ("normal", 0.8), ("high", 0.5), ("urgent", 0.3)], strict=True
    ):
        clue.priority, clue.confidence = priority, confidence
    path = write_report(
        tmp_path / "report.html", aoi="t", clues=clues, patches=patches, grid=grid, rgb_path=rgb
    )
    page = _Page(path.read_text(encoding="utf-8"))
    numbered = [card.split()[:2] for card in page.cards]
    expected = [clues[3], clues[2], clues[1], clues[0]]  # urgent, high, normal, low
    assert numbered == [[str(n), c.clue_id] for n, c in enumerate(expected, start=1)]
    # the overview numbers them alike: its link to card 1 lies over the urgent clue's patch
    hit = next(a for t, a in page.tags if a.get("class") == "hit" and a["href"] == "#clue-1")
    left = float(hit["style"].split("left:")[1].split("%")[0]) / 100 * grid.width
    top = float(hit["style"].split("top:")[1].split("%")[0]) / 100 * grid.height
    r0, c0, r1, c1 = patches[3].bbox_rc
    assert c0 - 12 <= left <= c0 and r0 - 12 <= top <= r0


def test_every_clue_has_a_card_in_order_with_its_facts(tmp_path):
    _, page = _write(tmp_path, run_info={"source": "synthetic", "analysis s": 12.3456})
    assert len(page.cards) == len(SPECS)
    for number, card in enumerate(page.cards, start=1):
        assert card.split()[:2] == [str(number), f"t-20250630-{number - 1:08x}"]
    first = page.cards[0]
    assert "quarry" in first and "urgent" in first and "0.91 (high)" in first
    assert "24,000 m²" in first and "(2.40 ha, 36.0 亩)" in first  # 12 x 20 px of 100 m²
    assert "34.98765, 108.12346" in first  # lat, lon to 5 decimals
    assert "NDVI -0.410" in first and "BSI +0.220" in first and "NDBI —" in first  # NaN -> dash
    assert NASTY_ZONE in first and "(core)" in first and NASTY_COUNTY in first
    assert "outside protected zones" in page.cards[3]
    # each card shows the before, the after and the NDVI-change chip, in that order
    alts = [a["alt"] for t, a in page.tags if t == "img"][1:]
    assert alts == [
        f"{which}, clue {n}"
        for n in range(1, len(SPECS) + 1)
        for which in ("before", "after", "NDVI change")
    ]
    assert "NDVI change, after − before" in first
    body = "".join(page.text)
    for window in ("2024-04-01 – 2024-06-30", "2025-04-01 – 2025-06-30", "2025-06-23"):
        assert window in body
    assert "synthetic" in body and "12.35" in body
    # the overview links every clue to its card
    hits = [a["href"] for t, a in page.tags if t == "a" and "hit" in a.get("class", "")]
    assert hits == [f"#clue-{n}" for n in range(1, len(SPECS) + 1)]
    ids = {a.get("id") for _, a in page.tags}
    assert {f"clue-{n}" for n in range(1, len(SPECS) + 1)} <= ids


def test_summary_tables_count_and_sum_by_type_zone_county(tmp_path):
    _, page = _write(tmp_path)
    area = {i: (s[2] - s[0]) * (s[3] - s[1]) * 100 / 1e4 for i, s in enumerate(SPECS)}
    assert page.table_rows("by-type") == {
        ("quarry",): (2, f"{area[0] + area[2]:.2f}"),
        ("construction",): (1, f"{area[1]:.2f}"),
        ("vegetation_loss",): (1, f"{area[3]:.2f}"),
        ("other",): (0, "0.00"),
    }
    assert page.table_rows("by-zone") == {
        ("Qinling general", "general"): (2, f"{area[1] + area[2]:.2f}"),
        (NASTY_ZONE, "core"): (1, f"{area[0]:.2f}"),
        ("outside protected zones", "—"): (1, f"{area[3]:.2f}"),
    }
    assert page.table_rows("by-county") == {
        ("Zhouzhi",): (2, f"{area[1] + area[2]:.2f}"),
        (NASTY_COUNTY,): (1, f"{area[0]:.2f}"),
        ("unknown county",): (1, f"{area[3]:.2f}"),
    }
    priority = page.table_rows("by-priority")
    assert list(priority) == [("urgent",), ("high",), ("normal",), ("low",)]
    assert [n for n, _ in priority.values()] == [1, 2, 1, 0]
    total = page.tables["by-zone"][-1]
    assert total[-2:] == [str(len(SPECS)), f"{sum(area.values()):.2f}"]


def test_clue_text_is_escaped_never_markup(tmp_path):
    text, page = _write(tmp_path, title="<i>night</i> & day")
    assert NASTY_ZONE not in text and NASTY_COUNTY not in text
    assert escape(NASTY_ZONE) in text and escape(NASTY_COUNTY) in text
    tags = [t for t, _ in page.tags]
    assert not set(tags) & {"b", "i", "iframe", "object", "embed"}
    assert tags.count("script") == 1  # the report's own (see the policy test), never a clue's
    assert not any("evil.example" in a.get("src", "") for _, a in page.tags)
    assert "<i>night</i> & day" in page.text  # the title round-trips, as text


def test_page_is_self_contained(tmp_path):
    text, page = _write(tmp_path)
    srcs = page.srcs()
    assert len(srcs) == 1 + 3 * len(SPECS)  # overview + before/after/change per clue
    for src in srcs:
        image = _image(src)
        image.load()  # decodes: a truncated or mangled data URI would fail here
    navigation_links = []
    for tag, attrs in page.tags:
        if tag == "a" and attrs.get("class") == "nav":  # opened by a click, never fetched
            navigation_links.append(attrs["href"])
            continue
        for key in ("src", "href", "action", "data", "poster", "srcset"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, key, value[:60])
        assert tag not in ("iframe", "object", "embed", "base")
        assert tag != "script" or "src" not in attrs  # the inline script only
        if tag == "link":
            assert attrs["href"].startswith("data:")  # the empty favicon only
    style = "".join(t for t in page.text if "{" in t)
    assert "@import" not in style and "@font-face" not in style
    assert "url(" not in text
    # nothing in the markup (outside escaped clue text, which holds "https://evil", and the
    # navigation links) is a URL
    hosts = {urlsplit(u).netloc or urlsplit(u).scheme for u in navigation_links}
    assert hosts == {"uri.amap.com", "api.map.baidu.com", "geo"}
    assert len(navigation_links) == 3 * len(SPECS)
    rest = text.replace(escape(NASTY_COUNTY), "")
    for link in navigation_links:
        rest = rest.replace(escape(link), "")
    assert "http://" not in rest and "https://" not in rest
    csp = next(
        a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in csp and "img-src data:" in csp


def test_no_clues_says_no_change_found(tmp_path):
    grid, rgb, _, _ = _scene(tmp_path)
    path = write_report(
        tmp_path / "report.html",
        aoi="quiet",
        clues=[],
        patches=[],
        grid=grid,
        rgb_path=rgb,
        chip_dir=None,
        before=TimeWindow(BEFORE_DAY, BEFORE_DAY),
        after=TimeWindow(AFTER_DAY, AFTER_DAY),
        detected_at="2025-05-01",
    )
    page = _Page(path.read_text(encoding="utf-8"))
    body = " ".join(page.text)
    assert "No change found" in body
    assert "2024-05-01 – 2024-05-01" in body and "2025-05-01 – 2025-05-01" in body
    assert page.cards == [] and len(page.srcs()) == 1  # the overview alone
    assert "by-type" not in page.tables
    text = path.read_text(encoding="utf-8")
    assert "<strong id='n-clues'>0</strong>" in text
    assert text.index("id='no-change'") < text.index("<img")  # said before anything else


# ------------------------------------------------------------------------------------- images


def _yellow(image: Image.Image) -> np.ndarray:
    return np.all(np.asarray(image.convert("RGB")) == OUTLINE_RGB, axis=-1)


def test_overview_outlines_sit_on_their_patches(tmp_path):
    grid, rgb, patches, _ = _scene(tmp_path)
    overview = render_overview(rgb, grid, patches, max_px=1600)
    # a small AOI is enlarged by a whole factor so numbers fit: 160 px -> 800 px
    assert overview.image.size == (800, 600)
    yellow = _yellow(overview.image)
    for patch, (x0, y0, x1, y1) in zip(patches, overview.boxes, strict=True):
        r0, c0, r1, c1 = patch.bbox_rc
        assert (x0, y0, x1, y1) == pytest.approx((c0 * 5, r0 * 5, c1 * 5, r1 * 5), abs=0.01)
        # outline along the box edges, imagery (no outline) well inside it
        for row in (r0 * 5, r1 * 5):
            assert max(yellow[row + d, c0 * 5 + 3 : c1 * 5 - 3].mean() for d in (-1, 0, 1)) > 0.9
        for col in (c0 * 5, c1 * 5):
            assert max(yellow[r0 * 5 + 3 : r1 * 5 - 3, col + d].mean() for d in (-1, 0, 1)) > 0.9
        assert not yellow[r0 * 5 + 8 : r1 * 5 - 8, c0 * 5 + 8 : c1 * 5 - 8].any()
    assert not yellow[:, 700:].any()  # no clue there


def test_overview_of_a_large_aoi_is_decimated_to_max_px(tmp_path):
    grid = make_grid(600, 1000)
    rgb = _rgb(grid, tmp_path / "rgb.tif")
    tiny = _patch(grid, 1, 300, 500, 302, 502)  # 2 px -> 0.4 px: gets a ring to be findable
    overview = render_overview(rgb, grid, [tiny], max_px=200)
    assert overview.image.size == (200, 120)
    x0, y0, x1, y1 = overview.boxes[0]
    assert x1 - x0 >= 16 and (x0 + x1) / 2 == pytest.approx(100.2, abs=0.5)
    assert _yellow(overview.image).sum() > 20


def test_chips_come_from_chip_dir_else_are_cut_from_rgb(tmp_path):
    grid, rgb, patches, clues = _scene(tmp_path)
    chip_dir = tmp_path / "chips"
    chip_dir.mkdir()
    magenta = Image.new("RGB", (128, 128), (255, 0, 255))
    cyan = Image.new("RGB", (128, 128), (0, 255, 255))
    clues[0].chip_before = f"chips/{clues[0].clue_id}_before.png"
    clues[0].chip_after = f"chips/{clues[0].clue_id}_after.png"
    clues[0].chip_change = f"chips/{clues[0].clue_id}_change.png"
    magenta.save(chip_dir / f"{clues[0].clue_id}_before.png")
    magenta.save(chip_dir / f"{clues[0].clue_id}_after.png")
    cyan.save(chip_dir / f"{clues[0].clue_id}_change.png")
    # a recorded path may not lead out of chip_dir
    magenta.save(tmp_path / "secret.png")
    clues[1].chip_before = clues[1].chip_after = clues[1].chip_change = "chips/../../secret.png"
    path = write_report(
        tmp_path / "report.html",
        aoi="t",
        clues=clues,
        patches=patches,
        grid=grid,
        rgb_path=rgb,
        chip_dir=chip_dir,
    )
    srcs = _Page(path.read_text(encoding="utf-8")).srcs()[1:]
    chips = [np.asarray(_image(s).convert("RGB")) for s in srcs]
    # per card: before, after, change
    assert (chips[0] == (255, 0, 255)).all() and (chips[1] == (255, 0, 255)).all()
    assert (chips[2] == (0, 255, 255)).all()
    for i, chip in enumerate(chips[3:]):
        patch = patches[1 + i // 3]
        window = chip_window(patch, grid.height, grid.width)
        zoom = math.ceil(128 / window.width)
        panel = window.width * zoom
        # two panels side by side (true | false colour, or the change | its legend), upscaled
        # to 128 px at least
        assert chip.shape == (panel, 2 * panel + PANEL_GAP, 3) and panel >= 128
        assert not (chip == (255, 0, 255)).all(axis=-1).any()
        assert not (chip == (0, 255, 255)).all(axis=-1).any()
        yellow = np.all(chip[:, :panel] == OUTLINE_RGB, axis=-1)
        assert yellow.sum() > 30  # the outline, kept exact through the palette
        # around the patch in the frame chips.py gives it, in both panels alike
        r0, c0, r1, c1 = patch.bbox_rc
        rows, cols = np.nonzero(yellow)
        assert rows.mean() == pytest.approx(((r0 + r1) / 2 - window.row_off) * zoom, abs=2)
        assert cols.mean() == pytest.approx(((c0 + c1) / 2 - window.col_off) * zoom, abs=2)
        right = np.all(chip[:, panel + PANEL_GAP :] == OUTLINE_RGB, axis=-1)
        if i % 3 == 2:  # the change chip's legend has no outline
            assert not right.any()
        else:
            assert np.array_equal(yellow, right)
    # before and after differ (bands 1-3 vs 4-6), and the change chip is neither
    assert not np.array_equal(chips[3], chips[4])
    assert not np.array_equal(chips[5][:, :128], chips[4][:, :128])


def test_hundreds_of_clues_stay_small(tmp_path):
    rng = np.random.default_rng(3)
    specs = []
    for _ in range(150):
        r, c = (int(v) for v in rng.integers(0, 380, 2))
        kind = ("quarry", "construction", "vegetation_loss", "other")[len(specs) % 4]
        specs.append((r, c, r + 6, c + 9, kind, "Z", "core", "C", "high"))
    _, page = _write_specs(tmp_path, specs, (400, 400))
    assert len(page.cards) == 150
    assert page.table_rows("by-type")[("other",)][0] == 150 // 4
    size = (tmp_path / "out" / "report.html").stat().st_size
    # noisy 128 px chips are ~35 kB as true-colour PNG; the palette keeps them near 10 kB
    assert size < 150 * 40_000


def _random_specs(n: int, edge: int, seed: int) -> list[tuple]:
    """`n` small clues anywhere on an `edge`² scene, of every type, priority, zone and county."""
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(n):
        r, c = (int(v) for v in rng.integers(0, edge - 10, 2))
        kind = ("quarry", "construction", "vegetation_loss", "other")[i % 4]
        priority = ("urgent", "high", "normal", "low")[i % 3]
        specs.append((r, c, r + 6, c + 9, kind, f"Z{i % 5}", "core", f"C{i % 7}", priority))
    return specs


@pytest.mark.parametrize("ahead", [1, report.CARDS_AHEAD])
def test_the_page_written_as_it_renders_is_the_page_rendered_whole(tmp_path, monkeypatch, ahead):
    """Writing the page as it renders, each card's chips encoded only a few cards ahead, changes
    no byte of it: it is the page rendered in one piece from every card built first, as the
    report used to be made."""
    specs = SPECS + _random_specs(report.CARDS_AHEAD + 8, 160, seed=5)  # more cards than ahead
    grid, rgb, patches, clues = _scene(tmp_path, specs, (160, 160))
    run_info = {"source": "test", "seconds": 1.5}
    monkeypatch.setattr(report, "CARDS_AHEAD", ahead)
    path = write_report(
        tmp_path / "out" / "report.html",
        aoi="t",
        clues=clues,
        patches=patches,
        grid=grid,
        rgb_path=rgb,
        run_info=run_info,
        chip_px=48,
    )

    order = sorted(range(len(clues)), key=lambda i: report._review_order(clues[i], i))
    clues, patches = [clues[i] for i in order], [patches[i] for i in order]
    overview = render_overview(rgb, grid, patches, max_px=1600)
    with CardChips(None, rgb, grid, 48) as chips:
        views = [
            report._clue_view(number, clue, chips.uris(clue, patch))
            for number, (clue, patch) in enumerate(zip(clues, patches, strict=True), start=1)
        ]
    templates = report._templates()
    page = templates.get_template("report.html.j2").render(
        csp=report._content_security_policy(templates.get_template("report.js").render()),
        version=__version__,
        header=report._header("Change report \u2014 t", "t", clues, None, None, None, run_info),
        overview=report._overview_figure(
            overview, png_data_uri(overview.image), report._window_text(clues[0].after)
        ),
        summary=report._summary(clues),
        filters=report._filters(views),
        clues=views,
        cards=views,
    )
    assert path.read_bytes() == (page + "\n").encode("utf-8")


def test_the_memory_of_writing_a_report_does_not_grow_with_its_clues(tmp_path):
    """The page goes to the file as it renders and a card's chips are made only a few dozen
    cards ahead of it: four times the clues, about the same peak (it grew about 2.5 times when
    the report held every card's chips and the whole page)."""

    def peak(n: int) -> int:
        work = tmp_path / f"n{n}"
        work.mkdir()
        grid, rgb, patches, clues = _scene(work, _random_specs(n, 120, seed=n), (120, 120))
        tracemalloc.start()
        try:
            write_report(
                work / "report.html",
                aoi="t",
                clues=clues,
                patches=patches,
                grid=grid,
                rgb_path=rgb,
                chip_px=32,
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(4)  # templates compiled, modules loaded: part of neither figure
    few, many = peak(40), peak(160)
    assert many < 1.5 * few, f"peak {few / 1e6:.1f} MB for 40 clues, {many / 1e6:.1f} MB for 160"


def _write_specs(tmp_path: Path, specs: list[tuple], shape: tuple[int, int]) -> tuple[str, _Page]:
    grid, rgb, patches, clues = _scene(tmp_path, specs, shape)
    path = write_report(
        tmp_path / "out" / "report.html",
        aoi="t",
        clues=clues,
        patches=patches,
        grid=grid,
        rgb_path=rgb,
    )
    text = path.read_text(encoding="utf-8")
    return text, _Page(text)


# ----------------------------------------------------------------------------- errors, atomic


def test_mismatched_inputs_are_refused(tmp_path):
    grid, rgb, patches, clues = _scene(tmp_path)
    with pytest.raises(ValueError, match="parallel"):
        write_report(
            tmp_path / "r.html", aoi="t", clues=clues, patches=patches[:-1], grid=grid, rgb_path=rgb
        )
    with pytest.raises(GridMismatchError, match="120"):
        write_report(
            tmp_path / "r.html",
            aoi="t",
            clues=clues,
            patches=patches,
            grid=make_grid(100, 100),
            rgb_path=rgb,
        )
    assert not (tmp_path / "r.html").exists()


def test_a_failed_write_keeps_the_previous_report(tmp_path):
    grid, rgb, patches, clues = _scene(tmp_path)
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("previous night")
    with pytest.raises(SinkError, match="missing.tif"):
        write_report(
            target,
            aoi="t",
            clues=clues,
            patches=patches,
            grid=grid,
            rgb_path=tmp_path / "missing.tif",
        )
    assert target.read_text() == "previous night"
    write_report(target, aoi="t", clues=clues, patches=patches, grid=grid, rgb_path=rgb)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no .part left


def test_report_from_a_real_pipeline_run(tmp_path):
    """The pipeline writes report.html beside clues.geojson, with its own chips embedded."""
    grid = make_grid(160, 160)
    before, after = forest_scene(grid.shape.yx, 1), forest_scene(grid.shape.yx, 2)
    yy, xx = np.mgrid[:160, :160]
    paint(after, ((yy - 60) ** 2 + (xx - 70) ** 2) < 15**2, ROCK)
    paint(after, (abs(yy - 120) < 8) & (abs(xx - 30) < 12), ROCK)
    for scene in (before, after):
        scene["SCL"] = np.full(grid.shape.yx, 4, np.uint8)
    source = MemorySource(grid, {BEFORE_DAY: before, AFTER_DAY: after})
    bands = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
    windows = (TimeWindow(BEFORE_DAY, BEFORE_DAY), TimeWindow(AFTER_DAY, AFTER_DAY))
    stacks = [source.load(source.search(grid, w), bands, grid, 64) for w in windows]
    options = AnalysisOptions("real", chips=True, chip_size=64)
    result = analyse(*stacks, grid, *windows, options, tmp_path / "real")
    assert result.clues  # two rock patches planted
    assert result.files["report"] == result.out_dir / "report.html"
    page = _Page(result.files["report"].read_text(encoding="utf-8"))
    assert len(page.cards) == len(result.clues)
    for card, clue in zip(page.cards, result.clues, strict=True):
        assert clue.clue_id in card
    # the chips are the pipeline's own (64 px at least), not cut again (128 px)
    srcs = page.srcs()[1:]
    for i, clue in enumerate(result.clues):
        for src, rel in zip(
            srcs[3 * i : 3 * i + 3],
            (clue.chip_before, clue.chip_after, clue.chip_change),
            strict=True,
        ):
            written = Image.open(result.out_dir / rel)
            assert _image(src).size == written.size
            assert 64 <= written.size[1] < 128
            # the very file: the report embeds the chip's bytes, not a new encoding of it
            assert src == "data:image/png;base64," + base64.b64encode(
                (result.out_dir / rel).read_bytes()
            ).decode("ascii")


def test_geometry_may_be_multipart(tmp_path):
    grid, rgb, patches, clues = _scene(tmp_path)
    a, b = patches[0].geometry, patches[1].geometry
    patches[0].geometry = MultiPolygon([a, b])
    overview = render_overview(rgb, grid, patches[:1])
    x0, y0, x1, y1 = overview.boxes[0]
    assert (x0, y0) == pytest.approx((50, 50)) and (x1, y1) == pytest.approx((350, 260))


# ------------------------------------------------------------------------------------ browser


def _only_the_page(page_url: str):
    """Allows the document itself; anything else it asks for is refused and counted."""
    return lambda url: url == page_url


def test_a_page_that_makes_requests_is_caught(tmp_path):
    """The control: without it, a recorder that never fires would pass the offline test below."""
    page_file = tmp_path / "leaky.html"
    page_file.write_text(
        "<!DOCTYPE html><html><head>"
        "<link rel='stylesheet' href='https://fonts.googleapis.com/css?family=Roboto'></head>"
        "<body><img src='http://tiles.example.com/1/2/3.png'><img src='local.png'>"
        "<script>fetch('https://api.example.org/x')</script></body></html>"
    )
    with browser_page(_only_the_page(page_file.as_uri())) as (page, requests):
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_load_state("networkidle")
    hosts = {urlsplit(u).netloc for u in requests.refused}
    assert {"fonts.googleapis.com", "tiles.example.com", "api.example.org"} <= hosts, requests
    # a file beside the page is a request too: the report must not need one
    assert (tmp_path / "local.png").as_uri() in requests.refused


def test_report_renders_offline_in_chromium(tmp_path, artefact_dir):
    _, page_html = _write(tmp_path)
    report = (tmp_path / "out" / "report.html").as_uri()
    shot = artefact_dir / "report.png"
    with browser_page(_only_the_page(report), width=1280, height=2000) as (page, requests):
        page.goto(report, wait_until="load")
        page.wait_for_load_state("networkidle")
        # every image decoded (data: URIs are not requests, so a broken one shows only here)
        broken = page.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        dom = page.content()
        page.screenshot(path=str(shot))
        # a card's three chips at one width, one under the other: the NDVI change lines up
        # under the true-colour panels and its legend under the false-colour ones
        boxes = [page.locator("#clue-1 .chips img").nth(i).bounding_box() for i in range(3)]
        page.locator("#clue-1").screenshot(path=str(artefact_dir / "report-card.png"))
    assert requests.seen == [report]
    assert requests.refused == [], f"the report made requests: {requests.refused}"
    assert requests.errors == [], requests.errors
    assert broken == 0
    rendered = _Page(dom)
    assert len(rendered.cards) == len(page_html.cards) == len(SPECS)
    before, after, change = boxes
    assert before["width"] == after["width"] == change["width"] == 400
    assert before["x"] == after["x"] == change["x"]
    assert before["y"] < after["y"] < change["y"]
    assert NASTY_ZONE in rendered.cards[0]  # still text after the browser parsed it
    assert [t for t, _ in rendered.tags].count("script") == 1  # the report's own only
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2000, 1280, 3)
    assert image.std() > 20  # not blank
    # the overview decoded and drew: its yellow outlines are on screen
    yellow = (image[..., 0] > 220) & (image[..., 1] > 190) & (image[..., 2] < 60)
    assert yellow.sum() > 200


def test_numbers_go_where_checking_every_earlier_number_puts_them():
    """The overview numbers its clues against a grid index of the labels already placed; it must
    place each exactly where comparing with every earlier label does, crowded or not."""
    from changedetect.io.sinks.overview import _overlaps, _place_label, _Taken

    class Every:
        def __init__(self):
            self.boxes = []

        def add(self, b):
            self.boxes.append(b)

        def hides(self, b):
            return any(_overlaps(b, other) for other in self.boxes)

    rng = np.random.default_rng(2)
    image = (900, 700)
    indexed, every = _Taken(), Every()
    crowded = 0
    for k in range(3000):
        x, y = rng.uniform(-20, 920), rng.uniform(-20, 720)
        box_ = (x, y, x + rng.uniform(0, 30), y + rng.uniform(0, 30))
        size = (rng.uniform(8, 60), rng.uniform(12, 30)) if k % 50 else (2000.0, 2000.0)
        a = _place_label(box_, size, image, indexed)
        b = _place_label(box_, size, image, every)
        assert a == b, k
        crowded += indexed.hides(a)
        indexed.add(a)
        every.add(b)
    assert crowded > 1000  # most of them found no free spot: every candidate was compared


def test_the_overview_shows_zone_boundaries_a_scale_bar_and_its_corners(tmp_path):
    from rasterio.warp import transform_bounds

    from changedetect.grids import WGS84, reproject_geometry
    from changedetect.io.sinks.palette import ZONE_RGB
    from changedetect.io.zones import ProtectionZone

    grid, rgb, patches, clues = _scene(tmp_path)
    left, bottom, right, top = grid.boundingbox
    # a zone over the west half of the scene and beyond it: its east edge crosses the picture
    west = box(left - 500, bottom - 500, (left + right) / 2, top + 500)
    zone = ProtectionZone(
        "core", "red_line_core", "Zhouzhi", reproject_geometry(west, grid.crs, WGS84)
    )
    far = ProtectionZone("far", None, None, box(10.0, 10.0, 10.1, 10.1))  # elsewhere on Earth
    overview = render_overview(rgb, grid, patches, zones=[zone, far])
    picture = np.asarray(overview.image.convert("RGB"))
    cyan = np.all(picture == ZONE_RGB, axis=-1)
    cols = np.nonzero(cyan.any(axis=0))[0]
    scale = picture.shape[1] / grid.width
    assert overview.zones == 1 and cyan.sum() > picture.shape[0]  # one line down the picture
    assert abs(np.median(np.nonzero(cyan)[1]) - grid.width / 2 * scale) <= 3
    assert cols.min() >= grid.width / 2 * scale - 4  # nothing drawn where the zone has no edge
    # a 1.6 km wide picture: a 200 m bar (at most a quarter of it), bottom left
    assert overview.scale_bar_m == 200
    bar = np.all(picture[-20:, : picture.shape[1] // 3] == (255, 255, 255), axis=-1)
    assert bar.any(axis=0).sum() == pytest.approx(200 / 10 * scale, abs=3)
    west_deg, south, east_deg, north = transform_bounds(
        grid.crs.to_wkt(), WGS84.to_wkt(), *grid.boundingbox
    )
    assert overview.corners[0] == pytest.approx((west_deg, north))
    text = write_report(
        tmp_path / "r.html", aoi="t", clues=clues, patches=patches, grid=grid, rgb_path=rgb,
        zones=[zone],
    ).read_text(encoding="utf-8")  # fmt: skip
    assert "Protection zone boundaries in cyan (1)" in text and "Scale bar 200 m" in text
    assert f"{north:.5f}, {west_deg:.5f}" in text


# ------------------------------------------------------------------ index: sorting and filters

#: Clues for the index's sorting and filters: four types, four zones (one outside any), four
#: counties (one unknown), every priority, ties in each facet and a confidence that is missing.
SORTABLE = [
    *SPECS,
    (60, 130, 70, 150, "other", "Alpine buffer", "buffer", "Huyi", "low"),
    (20, 90, 34, 100, "construction", "Alpine buffer", "buffer", "Huyi", "normal"),
]
SORTABLE_CONFIDENCE = [0.55, 0.91, 0.73, float("nan"), 0.88, 0.47]
PRIORITIES = ("urgent", "high", "normal", "low")
#: The index's columns (header text) and what each sorts by, from the clue and its number.
COLUMNS = {
    "clue": lambda c, n: c.clue_id,
    "type": lambda c, n: c.change_type,
    "priority": lambda c, n: PRIORITIES.index(c.priority),
    "confidence": lambda c, n: -math.inf if math.isnan(c.confidence) else c.confidence,
    "zone": lambda c, n: (c.zone or "").casefold(),
    "county": lambda c, n: (c.county or "").casefold(),
    "area (ha)": lambda c, n: c.area_m2,
    "#": lambda c, n: n,
}
#: The filters and the value of a clue each matches on.
FACETS = {
    "type": lambda c: c.change_type,
    "zone": lambda c: "outside protected zones" if c.zone is None else c.zone,
    "county": lambda c: "unknown county" if c.county is None else c.county,
    "priority": lambda c: c.priority,
}


def _write_sortable(tmp_path: Path) -> tuple[Path, list[PatchClue]]:
    grid, rgb, patches, clues = _scene(tmp_path, SORTABLE)
    for clue, confidence in zip(clues, SORTABLE_CONFIDENCE, strict=True):
        clue.confidence = confidence
    path = write_report(
        tmp_path / "out" / "report.html",
        aoi="t",
        clues=clues,
        patches=patches,
        grid=grid,
        rgb_path=rgb,
    )
    return path, clues


def _in_review_order(clues: list[PatchClue]) -> list[PatchClue]:
    def rank(clue: PatchClue) -> tuple[int, float]:
        confidence = 0.0 if math.isnan(clue.confidence) else clue.confidence
        return PRIORITIES.index(clue.priority), -confidence

    return sorted(clues, key=rank)


_VISIBLE = "els => els.filter(e => e.getClientRects().length > 0)"


def _index_ids(page) -> list[str]:
    """Clue ids of the index rows a reader sees, top to bottom."""
    return page.eval_on_selector_all(
        "#clue-index tbody tr", f"rows => ({_VISIBLE})(rows).map(r => r.cells[1].textContent)"
    )


def _card_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        "article.clue",
        f"cards => ({_VISIBLE})(cards).map(c => c.querySelector('h3 .id').textContent)",
    )


def _hit_targets(page) -> list[str]:
    return page.eval_on_selector_all(
        "a.hit", f"hits => ({_VISIBLE})(hits).map(a => a.getAttribute('href'))"
    )


def test_the_policy_allows_exactly_the_inline_script_by_its_hash(tmp_path):
    """The page's one script runs because the policy names its SHA-256, computed from the script
    as written: an edited script under a stale hash would not run, and a script smuggled in by a
    clue's text (the zone holds `<script>`) would not be there to run."""
    path, _ = _write_sortable(tmp_path)
    text = path.read_text(encoding="utf-8")
    page = _Page(text)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", text, flags=re.DOTALL)
    assert text.count("<script") == 1 and len(scripts) == 1, "clue text must stay text"
    attrs, script = scripts[0]
    assert attrs == "" and "addEventListener" in script
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = next(
        a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives == {
        "default-src": "'none'",
        "img-src": "data:",
        "style-src": "'unsafe-inline'",
        "script-src": f"'sha256-{digest}'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    # the policy blocks inline handlers: the script wires its own listeners
    assert not any(key.startswith("on") for _, attrs in page.tags for key in attrs)
    # the zone's text reaches the filters and the rows' data as text too
    assert escape(NASTY_ZONE) in re.search(r"<select id='filter-zone'.*?</select>", text, re.S)[0]
    # a page without clues has nothing to sort and no script
    grid, rgb, _, _ = _scene(tmp_path / "quiet")
    quiet = write_report(
        tmp_path / "quiet.html", aoi="q", clues=[], patches=[], grid=grid, rgb_path=rgb
    ).read_text(encoding="utf-8")
    assert "<script" not in quiet and "script-src" not in quiet


def test_clicking_a_column_header_sorts_the_clues_both_ways(tmp_path):
    path, clues = _write_sortable(tmp_path)
    url = path.as_uri()
    review = _in_review_order(clues)
    number = {c.clue_id: n for n, c in enumerate(review, start=1)}
    labels = ["#", "clue", "type", "priority", "confidence", "zone", "county", "area (ha)"]
    with browser_page(_only_the_page(url)) as (page, requests):
        page.goto(url, wait_until="load")
        headers = page.eval_on_selector_all(
            "#clue-index thead th", "ths => ths.map(t => t.textContent)"
        )
        assert headers == labels

        def sort_state() -> list[str | None]:
            return page.eval_on_selector_all(
                "#clue-index thead th", "ths => ths.map(t => t.getAttribute('aria-sort'))"
            )

        # review order to start with, and so marked; the first press on # reverses it
        assert _index_ids(page) == [c.clue_id for c in review]
        assert sort_state() == ["ascending", *[None] * 7]
        page.focus("#clue-index thead th:nth-child(1) button")
        page.keyboard.press("Space")
        assert _index_ids(page) == [c.clue_id for c in reversed(review)]
        assert sort_state() == ["descending", *[None] * 7]
        for label, key in COLUMNS.items():
            column = labels.index(label)
            button = f"#clue-index thead th:nth-child({column + 1}) button"
            # equal values stay in review order; descending is the exact reverse
            ranked = sorted(
                review, key=lambda c, k=key: (k(c, number[c.clue_id]), number[c.clue_id])
            )
            ascending = [c.clue_id for c in ranked]
            page.click(button)
            assert _index_ids(page) == ascending, label
            assert sort_state() == [("ascending" if i == column else None) for i in range(8)]
            page.focus(button)  # and by keyboard: a second press reverses
            page.keyboard.press("Enter")
            assert _index_ids(page) == ascending[::-1], label
            assert sort_state() == [("descending" if i == column else None) for i in range(8)]
        # sorting moves rows, never hides them or the cards, which keep the review order
        assert _card_ids(page) == [c.clue_id for c in review]
    assert requests.seen == [url] and requests.refused == []
    assert requests.errors == [], requests.errors


def test_each_filter_leaves_exactly_the_matching_clues_and_cards(tmp_path, artefact_dir):
    path, clues = _write_sortable(tmp_path)
    url = path.as_uri()
    review = [c.clue_id for c in _in_review_order(clues)]
    by_id = {c.clue_id: c for c in clues}
    with browser_page(_only_the_page(url), width=1280, height=1400) as (page, requests):
        page.goto(url, wait_until="load")
        assert page.is_visible("#clue-filters")
        assert page.text_content("#clues-shown") == "6 of 6 clues shown"

        def shown() -> tuple[list[str], list[str], list[str], str]:
            hits = [review[int(href.removeprefix("#clue-")) - 1] for href in _hit_targets(page)]
            return _index_ids(page), _card_ids(page), hits, page.text_content("#clues-shown")

        def expect(match) -> tuple[list[str], list[str], list[str], str]:
            kept = [i for i in review if match(by_id[i])]
            return kept, kept, kept, f"{len(kept)} of 6 clues shown"

        for facet, value in FACETS.items():
            select = f"#filter-{facet}"
            options = page.eval_on_selector_all(
                f"{select} option", "os => os.map(o => o.textContent)"
            )
            present = {value(c) for c in clues}
            assert options[0] == "all" and set(options[1:]) == present and len(options) == 5
            for option in options[1:]:
                page.select_option(select, label=option)
                assert shown() == expect(lambda c, v=value, o=option: v(c) == o), (facet, option)
            page.select_option(select, index=0)
            assert shown() == expect(lambda c: True)
        # filters combine; a combination nothing matches shows nothing and says so
        page.select_option("#filter-zone", label="Qinling general")
        page.select_option("#filter-priority", label="high")
        page.select_option("#filter-type", label="quarry")
        assert shown() == expect(
            lambda c: (c.zone, c.priority, c.change_type) == ("Qinling general", "high", "quarry")
        )
        page.select_option("#filter-priority", label="urgent")
        assert shown() == ([], [], [], "0 of 6 clues shown")
        for facet in ("zone", "priority", "type"):
            page.select_option(f"#filter-{facet}", index=0)
        page.select_option("#filter-county", label="Zhouzhi")
        assert shown() == expect(lambda c: c.county == "Zhouzhi")
        page.screenshot(path=str(artefact_dir / "report-filtered-by-county.png"), full_page=True)
    assert requests.seen == [url] and requests.refused == []
    assert requests.errors == [], requests.errors


def test_without_javascript_every_clue_shows_in_review_order(tmp_path):
    path, clues = _write_sortable(tmp_path)
    url = path.as_uri()
    review = [c.clue_id for c in _in_review_order(clues)]
    with browser_page(_only_the_page(url), javascript=False) as (page, requests):
        page.goto(url, wait_until="load")
        assert _index_ids(page) == review and _card_ids(page) == review
        assert len(_hit_targets(page)) == len(review)
        assert not page.is_visible("#clue-filters")  # no control that would do nothing
    assert requests.refused == []
