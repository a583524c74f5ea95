"""Alert state across acquisitions: probable, confirmed by later clear observations, or dropped."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest
from shapely.geometry import box

from changedetect import runs
from changedetect.algorithms.alerts import Alert, advance, site_sighting
from changedetect.config import load_config
from changedetect.errors import ConfigError
from changedetect.pipeline import run
from changedetect.state import AlertBook, RunState
from changedetect.testing.rasters import write_multiband
from tests.factories import ROCK

from .regions import GRID, write_nightly_region
from .test_cli import scene_dn

QUARRY = box(108.80, 33.90, 108.81, 33.91)
ELSEWHERE = box(108.90, 33.90, 108.91, 33.91)


@dataclass(frozen=True)
class Clue:
    clue_id: str
    geometry_wgs84: object
    change_type: str


def clue(cid: str, geom=QUARRY, change_type: str = "quarry") -> Clue:
    return Clue(cid, geom, change_type)


def never(_: Alert) -> str:
    raise AssertionError("no alert should need observing here")


def unchanged(_: Alert) -> str:
    return "unchanged"


def unobserved(_: Alert) -> str:
    return "unobserved"


def nights(*steps, confirm_after=2):
    """Run `advance` over (night, clues, observe) steps; the alerts after each."""
    alerts: list[Alert] = []
    history = []
    for night, clues, observe in steps:
        alerts, of_clue = advance(alerts, night, clues, observe, confirm_after=confirm_after)
        history.append((alerts, of_clue))
    return history


def test_first_seen_is_probable():
    ((alerts, of_clue),) = nights(("2025-05-01", [clue("c1")], never))
    (alert,) = alerts
    assert (alert.status, alert.supporting, alert.first_detected, alert.last_detected) == (
        "probable", 1, "2025-05-01", "2025-05-01",
    )  # fmt: skip
    assert of_clue["c1"] is alert


def test_confirmed_after_two_later_clear_observations():
    history = nights(
        ("2025-05-01", [clue("c1")], never),
        ("2025-05-06", [clue("c2")], never),
        ("2025-05-11", [clue("c3")], never),
    )
    statuses = [h[0][0].status for h in history]
    assert statuses == ["probable", "probable", "confirmed"]
    alert = history[-1][0][0]
    assert (alert.supporting, alert.first_detected, alert.last_detected, alert.clue_id) == (
        3, "2025-05-01", "2025-05-11", "c3",
    )  # fmt: skip
    assert len(history[-1][0]) == 1  # one site, one alert


def test_confirm_after_is_configurable():
    history = nights(
        ("2025-05-01", [clue("c1")], never), ("2025-05-06", [clue("c2")], never), confirm_after=1
    )
    assert history[-1][0][0].status == "confirmed"
    with pytest.raises(ValueError, match="confirm_after"):
        advance([], "2025-05-01", [], never, confirm_after=0)


def test_a_clear_night_showing_the_ground_as_before_drops_a_probable_alert_and_keeps_it():
    history = nights(
        ("2025-05-01", [clue("cloud-edge")], never),
        ("2025-05-06", [], unchanged),
    )
    (alert,) = history[-1][0]
    assert (alert.status, alert.dropped_on, alert.supporting) == ("dropped", "2025-05-06", 1)
    # and a later clue at the same place opens a new alert instead of reviving it
    again, of_clue = advance(history[-1][0], "2025-05-11", [clue("c9")], never)
    assert len(again) == 2 and of_clue["c9"].status == "probable"
    assert of_clue["c9"].alert_id != alert.alert_id


def test_a_night_that_does_not_see_the_site_changes_nothing():
    history = nights(
        ("2025-05-01", [clue("c1")], never),
        ("2025-05-06", [], unobserved),
        ("2025-05-11", [clue("c2")], never),
        ("2025-05-16", [clue("c3")], never),
    )
    assert [h[0][0].status for h in history] == ["probable", "probable", "probable", "confirmed"]


def test_a_confirmed_alert_is_not_dropped_by_a_quiet_night():
    history = nights(
        ("2025-05-01", [clue("c1")], never),
        ("2025-05-06", [clue("c2")], never),
        ("2025-05-11", [clue("c3")], never),
        ("2025-05-16", [], unchanged),
    )
    assert history[-1][0][0].status == "confirmed"


def test_re_running_a_night_counts_nothing_twice():
    first, of_clue = advance([], "2025-05-01", [clue("c1"), clue("e1", ELSEWHERE)], never)
    again, of_clue_again = advance(first, "2025-05-01", [clue("c1"), clue("e1", ELSEWHERE)], never)
    assert again == first and of_clue_again == of_clue
    second, _ = advance(first, "2025-05-06", [clue("c2")], unchanged)
    twice, _ = advance(second, "2025-05-06", [clue("c2")], unchanged)
    assert twice == second
    by_site = {a.clue_id: a for a in twice}
    assert by_site["c2"].supporting == 2
    assert by_site["e1"].status == "dropped"  # probable and unseen on the second night


def test_clues_that_barely_touch_an_alert_open_their_own():
    sliver = box(108.8095, 33.90, 108.8195, 33.91)  # 5 % of the quarry's box
    alerts, of_clue = advance(nights(("2025-05-01", [clue("c1")], never))[0][0],
                              "2025-05-06", [clue("c2", sliver)], unobserved)  # fmt: skip
    assert len(alerts) == 2 and of_clue["c2"].supporting == 1
    # a third of it on the site (a strip of haze at a forest patch's rim): not the same ground;
    # two thirds of it: the site seen again
    for share, same in ((0.3, False), (0.7, True)):
        west = 108.81 - share * 0.01
        rim = box(west, 33.90, west + 0.01, 33.91)
        alerts, of_clue = advance(nights(("2025-05-01", [clue("c1")], never))[0][0],
                                  "2025-05-06", [clue("r", rim)], unobserved)  # fmt: skip
        assert (len(alerts) == 1) == same and (of_clue["r"].supporting == 2) == same, share


def test_two_clues_on_one_site_in_one_night_count_once():
    halves = [box(108.80, 33.90, 108.805, 33.91), box(108.805, 33.90, 108.81, 33.91)]
    first = nights(("2025-05-01", [clue("c1")], never))[0][0]
    alerts, of_clue = advance(first, "2025-05-06", [clue("a", halves[0]), clue("b", halves[1])],
                              never)  # fmt: skip
    assert len(alerts) == 1 and alerts[0].supporting == 2
    assert of_clue["a"] == of_clue["b"] == alerts[0]
    # its footprint takes in both: a site that grew is followed whole
    wider = box(108.80, 33.90, 108.815, 33.91)
    grown, _ = advance(alerts, "2025-05-11", [clue("w", wider)], never)
    assert grown[0].footprint.covers(wider) and grown[0].status == "confirmed"


def test_a_chain_of_detections_that_wanders_off_the_site_is_not_one_alert():
    # three boxes in a row: each night's clue lies mostly on the previous one's, the third not
    # on the first's
    steps = [box(108.80 + 0.004 * k, 33.90, 108.81 + 0.004 * k, 33.91) for k in range(3)]
    history = nights(
        ("2025-05-01", [clue("c1", steps[0])], never),
        ("2025-05-06", [clue("c2", steps[1])], unobserved),
        ("2025-05-11", [clue("c3", steps[2])], unobserved),
    )
    alerts, of_clue = history[-1]
    # the second clue overlaps the site: it continues the first alert and widens its footprint
    assert history[1][1]["c2"].alert_id == history[0][1]["c1"].alert_id
    assert alerts[0].footprint.covers(steps[1]) and alerts[0].site.equals(steps[0])
    # the third overlaps that wider footprint only: its own probable alert, nothing confirmed
    assert of_clue["c3"].alert_id != alerts[0].alert_id
    assert [a.status for a in alerts] == ["probable", "probable"]
    assert sorted(a.supporting for a in alerts) == [1, 2]


# ------------------------------------------------------------------ one acquisition at a site

FOREST = np.array([0.03, 0.06, 0.04, 0.35, 0.16, 0.08])[:, None]
BARE = np.array([0.20, 0.24, 0.29, 0.33, 0.40, 0.35])[:, None]


def pixels(spectrum, n=20, seed=0):
    noise = np.random.default_rng(seed).normal(0, 0.01, (6, n))
    return np.repeat(spectrum, n, axis=1) + noise


def test_an_acquisition_nearer_the_after_state_shows_the_change():
    before, after = pixels(FOREST, seed=1), pixels(BARE, seed=2)
    clear = np.ones(20, dtype=bool)
    assert site_sighting(before, after, pixels(BARE, seed=3), clear) == "changed"
    assert site_sighting(before, after, pixels(FOREST, seed=4), clear) == "unchanged"
    # a darker, hazier view of the bare site is still nearer bare than forest
    assert site_sighting(before, after, pixels(BARE * 0.8 + 0.02, seed=5), clear) == "changed"
    # mostly under cloud: not seen, whatever the few clear pixels say
    some = np.zeros(20, dtype=bool)
    some[:9] = True
    assert site_sighting(before, after, pixels(BARE, seed=6), some) == "unobserved"
    hidden = pixels(BARE, seed=7)
    hidden[:, 5:] = np.nan
    assert site_sighting(before, after, hidden, clear) == "unobserved"


def test_each_clear_acquisition_of_one_night_counts():
    sightings = {"c1": [("2025-05-08", "changed"), ("2025-05-18", "unobserved"),
                        ("2025-05-28", "changed"), ("2025-06-07", "changed")]}  # fmt: skip
    alerts, of_clue = advance([], "2025-06-07", [clue("c1")], never, sightings=sightings)
    alert = of_clue["c1"]
    assert (alert.status, alert.supporting, alert.first_detected, alert.last_detected) == (
        "confirmed", 3, "2025-05-08", "2025-06-07",
    )  # fmt: skip
    assert alert.observed == ("2025-05-08", "2025-05-28", "2025-06-07")
    # the next night brings one more acquisition: counted once, even when re-run
    later = {"c2": [("2025-06-17", "changed")]}
    again, _ = advance(alerts, "2025-06-17", [clue("c2")], never, sightings=later)
    twice, _ = advance(again, "2025-06-17", [clue("c2")], never, sightings=later)
    assert again == twice and twice[0].supporting == 4


def test_a_change_the_newest_clear_acquisition_no_longer_shows_is_dropped_and_kept():
    sightings = {"wet": [("2025-05-08", "changed"), ("2025-05-18", "unchanged"),
                         ("2025-05-28", "unobserved")]}  # fmt: skip
    alerts, of_clue = advance([], "2025-05-28", [clue("wet")], never, sightings=sightings)
    assert (of_clue["wet"].status, of_clue["wet"].dropped_on) == ("dropped", "2025-05-18")
    again, of_again = advance(alerts, "2025-05-28", [clue("wet")], never, sightings=sightings)
    assert again == alerts and of_again == of_clue
    # a probable alert from an earlier night, dropped by tonight's newest view, re-run
    first, _ = advance([], "2025-05-01", [clue("c1")], never)
    tonight = {"c2": [("2025-05-08", "changed"), ("2025-05-18", "unchanged")]}
    dropped, of_c2 = advance(first, "2025-05-18", [clue("c2")], never, sightings=tonight)
    assert len(dropped) == 1 and of_c2["c2"].status == "dropped"
    assert of_c2["c2"].supporting == 2
    rerun, of_rerun = advance(dropped, "2025-05-18", [clue("c2")], never, sightings=tonight)
    assert rerun == dropped and of_rerun == of_c2
    # but a confirmed alert is not dropped by one view: the tracker owns confirmed sites
    confirmed = {"c3": [("2025-05-08", "changed"), ("2025-05-18", "changed"),
                        ("2025-05-28", "changed"), ("2025-06-07", "unchanged")]}  # fmt: skip
    _, of_c3 = advance([], "2025-06-07", [clue("c3")], never, sightings=confirmed)
    assert of_c3["c3"].status == "confirmed"


def test_the_alert_book_round_trips_per_aoi_and_refuses_a_corrupt_file(tmp_path):
    history = nights(
        ("2025-05-01", [clue("c1"), clue("e1", ELSEWHERE)], never),
        ("2025-05-06", [clue("c2")], unchanged),
    )
    alerts = history[-1][0]
    book = AlertBook(tmp_path / "alerts.json")
    assert book.get("qinling") == []
    book.record("qinling", alerts)
    book.record("other", alerts[:1])
    again = AlertBook(tmp_path / "alerts.json")
    assert again.get("qinling") == alerts and again.get("other") == alerts[:1]
    assert {a.status for a in again.get("qinling")} == {"probable", "dropped"}
    # a version-1 book (it counted nights) reads on: a night was its newest acquisition's date
    doc = json.loads((tmp_path / "alerts.json").read_text())
    entries = doc["aois"]["qinling"]
    v1 = [{("nights" if k == "observed" else k): v for k, v in e.items()} for e in entries]
    v1 = {"version": 1, "aois": {"qinling": v1}}
    (tmp_path / "alerts.json").write_text(json.dumps(v1))
    assert AlertBook(tmp_path / "alerts.json").get("qinling") == alerts
    (tmp_path / "alerts.json").write_text('{"version": 1, "aois": {"qinling": [{"alert_id": 1}]}}')
    with pytest.raises(ConfigError, match="alerts.json, AOI qinling: bad entry"):
        again.get("qinling")
    (tmp_path / "alerts.json").write_text("{not json")
    with pytest.raises(ConfigError, match="alerts.json is unreadable.*move it away"):
        again.get("qinling")


# ------------------------------------------------------------------ across real runs (CLI path)


def _night(folder, day, seed, transient=False):
    bands = scene_dn(GRID.shape.yx, seed, quarry=True)
    if transient:  # a bright patch for one night only: a cloud edge, a tarp, wet ground
        for b, value in ROCK.items():
            bands[b][70:90, 5:30] = round(value * 1e4)
    write_multiband(folder / f"S2_{day}.tif", bands, GRID, nodata=0)


@pytest.fixture
def region(tmp_path):
    folder, config = write_nightly_region(tmp_path, chips=False)
    return folder, load_config(config), tmp_path / "out"


def test_a_persisting_site_is_confirmed_and_a_one_night_change_dropped(region):
    folder, config, out = region
    book = AlertBook(out / "alerts.json")
    _night(folder, "20250508", 2)
    (first,) = run(config)
    (quarry,) = first.clues
    assert (quarry.alert_status, quarry.supporting_observations) == ("probable", 1)
    assert quarry.first_detected == quarry.last_detected == "2025-05-08"

    _night(folder, "20250602", 5, transient=True)
    (second,) = run(config)
    assert len(second.clues) == 2
    by_status = {c.supporting_observations: c for c in second.clues}
    assert by_status[2].alert_id == quarry.alert_id and by_status[2].alert_status == "probable"
    assert by_status[1].alert_status == "probable"  # the transient, first seen tonight
    transient_id = by_status[1].alert_id

    _night(folder, "20250617", 6)
    (third,) = run(config)
    (quarry3,) = third.clues
    assert (quarry3.alert_id, quarry3.alert_status, quarry3.supporting_observations) == (
        quarry.alert_id, "confirmed", 3,
    )  # fmt: skip
    assert (quarry3.first_detected, quarry3.last_detected) == ("2025-05-08", "2025-06-17")
    doc = json.loads(third.files["clues"].read_text())
    props = doc["features"][0]["properties"]
    assert (props["alert_status"], props["supporting_observations"]) == ("confirmed", 3)
    # the one-night change: a clear night showed the ground as before; kept, not deleted
    alerts = {a.alert_id: a for a in book.get("valley")}
    assert alerts[transient_id].status == "dropped"
    assert alerts[transient_id].dropped_on == "2025-06-17"
    assert alerts[quarry.alert_id].status == "confirmed"


def test_a_run_killed_before_it_records_leaves_the_alerts_as_they_were(region, monkeypatch):
    folder, config, out = region
    _night(folder, "20250508", 2)
    run(config)
    before = (out / "alerts.json").read_text()
    _night(folder, "20250602", 5)

    def killed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    # killed once the outputs are in place, before anything is recorded
    monkeypatch.setattr(runs, "record_aoi", killed)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert (out / "alerts.json").read_text() == before
    monkeypatch.undo()
    # killed between the alert state and the run state: the night is redone and counted once
    monkeypatch.setattr(RunState, "record", killed)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    monkeypatch.undo()
    (again,) = run(config)
    assert again.clues[0].supporting_observations == 2
    assert AlertBook(out / "alerts.json").get("valley")[0].supporting == 2


def test_re_running_a_night_in_full_reads_the_alerts_and_counts_nothing_twice(region):
    folder, config, out = region
    _night(folder, "20250508", 2)
    run(config)
    _night(folder, "20250602", 5)
    (second,) = run(config)
    recorded = (out / "alerts.json").read_text()
    (full,) = run(config, incremental=False)
    assert [(c.alert_id, c.alert_status, c.supporting_observations) for c in full.clues] == [
        (c.alert_id, c.alert_status, c.supporting_observations) for c in second.clues
    ]
    assert (out / "alerts.json").read_text() == recorded


def test_one_run_counts_every_clear_acquisition_of_its_window(region):
    folder, config, out = region
    for day, seed in (("20250508", 2), ("20250518", 3), ("20250528", 5)):
        _night(folder, day, seed)
    clouded = scene_dn(GRID.shape.yx, 6, quarry=True)
    for band in clouded.values():
        band[20:70, 30:85] = 0  # no data over the quarry on this date
    write_multiband(folder / "S2_20250523.tif", clouded, GRID, nodata=0)
    (first,) = run(config)
    (quarry,) = first.clues
    assert (quarry.alert_status, quarry.supporting_observations) == ("confirmed", 3)
    assert (quarry.first_detected, quarry.last_detected) == ("2025-05-08", "2025-05-28")
    (alert,) = AlertBook(out / "alerts.json").get("valley")
    assert alert.observed == ("2025-05-08", "2025-05-18", "2025-05-28")


def test_a_site_view_tells_recurring_ground_and_counts_clear_acquisitions_only():
    from changedetect.alerting import SiteView

    def obs(*states):
        return np.stack([pixels(s, seed=k) for k, s in enumerate(states)])

    clear = np.ones((5, 20), dtype=bool)
    # forest on three dates, bare on two: bare ground now is ground seen before
    view = SiteView(obs(FOREST, FOREST, BARE, FOREST, BARE), clear, [f"2024-05-0{d}" for d in
                    range(1, 6)], obs(BARE), clear[:1], ["2025-05-01"])  # fmt: skip
    assert view.recurs()
    assert view.sightings("after") == [("2025-05-01", "changed")]
    # the same, but one of the bare dates under cloud: one sighting is not enough
    clouded = clear.copy()
    clouded[4] = False
    assert not SiteView(view.before, clouded, view.before_days, view.after, view.after_clear,
                        view.after_days).recurs()  # fmt: skip
    # two before acquisitions make the median: they never show a recurrence
    two = SiteView(obs(BARE, BARE), clear[:2], ["2024-05-01", "2024-05-02"], obs(BARE),
                   clear[:1], ["2025-05-01"])  # fmt: skip
    assert not two.recurs()


def test_a_stable_site_seen_by_one_noisy_acquisition_is_recognised_as_seen_before():
    """A stable bright site (an old quarry) whose one after acquisition sits 3 % darker, inside
    the spread of the before acquisitions' calibration: the before side shows it as it is now.
    Pixel by pixel the after acquisition's own noise makes every before acquisition vote for the
    before median; judged on the site's medians it is a recurrence."""
    from changedetect.alerting import SiteView

    rng = np.random.default_rng(11)
    gains = [0.96, 1.02, 0.97, 1.0, 1.03, 0.98, 1.01, 0.995, 1.015]
    before = np.stack([BARE * g + rng.normal(0, 0.01, (6, 60)) for g in gains])
    after = (BARE * 0.97 + rng.normal(0, 0.01, (6, 60)))[None]
    days = [f"2024-0{m}-10" for m in range(1, 10)]
    clear = np.ones((len(gains), 60), dtype=bool)
    view = SiteView(before, clear, days, after, clear[:1], ["2025-05-01"])
    assert view.recurs()
    # the control: a new quarry on that forest is no recurrence
    forest = np.stack([FOREST * g + rng.normal(0, 0.01, (6, 60)) for g in gains])
    assert not SiteView(forest, clear, days, after, clear[:1], ["2025-05-01"]).recurs()


def _patches_and_sides():
    """Many patches on a small grid and two sides of random acquisitions (4 before, 2 after)
    with gaps and clouds, as lazy stacks in chunks smaller than the grid."""
    import dask.array as da
    import xarray as xr

    from changedetect.algorithms.patch_pixels import PatchPixels
    from changedetect.algorithms.patches import build_patches
    from changedetect.models import Composite
    from changedetect.types import ANALYSIS_BANDS

    from .test_patches import many_patches

    labels, n = many_patches()
    pixels = PatchPixels.from_raster(labels, n)
    patches = build_patches(pixels, GRID.transform, {}, pixels.counts * 100.0)
    rng = np.random.default_rng(5)

    def side(n_times, day):
        shape = (n_times, *labels.shape)
        bands = {}
        for b in ANALYSIS_BANDS:
            data = rng.random(shape).astype(np.float32)
            data[rng.random(shape) < 0.05] = np.nan
            bands[b] = (("time", "y", "x"), da.from_array(data, chunks=(1, 40, 50)))
        times = np.array([f"{day}T00:00:{t:02d}" for t in range(n_times)], dtype="M8[ns]")
        stack = xr.Dataset(bands, coords={"time": times})
        clear = da.from_array(rng.random(shape) > 0.2, chunks=(1, 40, 50))
        members = np.arange(n_times) % 2 == 0
        comp = Composite(None, None, None, [], valid=xr.DataArray(clear), members=members)
        return stack, comp

    return labels, n, pixels, patches, [side(4, "2024-05-01"), side(2, "2025-05-01")]


@pytest.mark.parametrize("per_call", [1, 16])
def test_site_views_read_each_patch_as_its_own_window_does(monkeypatch, per_call):
    """site_views gathers the patches' pixels chunk by chunk (`per_call` chunks per dask call);
    the result must be what slicing each patch's bounding window out of the stacks gives, pixel
    for pixel, in raster order."""
    from changedetect import alerting
    from changedetect.alerting import site_views
    from changedetect.types import ANALYSIS_BANDS

    labels, n, pixels, patches, sides = _patches_and_sides()
    monkeypatch.setattr(alerting, "GATHER_CHUNKS", per_call)
    views = site_views(patches, pixels, sides)
    assert len(patches) == n and set(views) == set(range(1, n + 1))
    cubes = [
        (np.stack([s[b].values for b in ANALYSIS_BANDS], axis=1), c.valid.values) for s, c in sides
    ]
    for p in patches:
        r0, c0, r1, c1 = p.bbox_rc
        inside = labels[r0:r1, c0:c1] == p.label
        view = views[p.label]
        (b, b_ok), (a, a_ok) = (
            (cube[:, :, r0:r1, c0:c1][:, :, inside], valid[:, r0:r1, c0:c1][:, inside])
            for cube, valid in cubes
        )
        for got, expected in ((view.before, b), (view.before_clear, b_ok),
                              (view.after, a), (view.after_clear, a_ok)):  # fmt: skip
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
        assert view.before_days == ["2024-05-01"] * 4 and view.after_days == ["2025-05-01"] * 2
        np.testing.assert_array_equal(view.before_baseline, sides[0][1].members)
    assert site_views([], pixels, sides) == {}


def _count_site_views(monkeypatch) -> list[int]:
    """The number of patches of each call of site_views from now on (the calls still made)."""
    from changedetect import alerting

    calls: list[int] = []
    gather = alerting.site_views

    def counted(batch_patches, *args):
        calls.append(len(batch_patches))
        return gather(batch_patches, *args)

    monkeypatch.setattr(alerting, "site_views", counted)
    return calls


@pytest.mark.parametrize("batch", [1, 50, 10**9])
def test_site_findings_are_the_views_findings_whatever_the_batch(monkeypatch, batch):
    """site_findings holds the views of a batch of patches at a time (`batch` pixels: one patch
    each, a few, all): each patch's findings are those of its view gathered with all the others."""
    from changedetect import alerting
    from changedetect.alerting import site_findings, site_views

    _, n, pixels, patches, sides = _patches_and_sides()
    views = site_views(patches, pixels, sides)
    calls = _count_site_views(monkeypatch)
    monkeypatch.setattr(alerting, "FINDINGS_BATCH_PIXELS", batch)
    found = site_findings(patches, pixels, sides)
    assert sum(calls) == n
    expected_calls = {1: n, 10**9: 1}.get(batch)
    if expected_calls is None:
        assert 1 < len(calls) < n
    else:
        assert len(calls) == expected_calls
    assert set(found) == set(views)
    for label, view in views.items():
        assert found[label].recurs == view.recurs()
        assert found[label].after == view.sightings("after")
    # a run that follows no alert asks for the recurrences only
    for label, seen in site_findings(patches, pixels, sides, after=False).items():
        assert seen.recurs == views[label].recurs() and seen.after is None


@pytest.mark.parametrize("n_before", [1, 2, 3])
def test_site_findings_read_nothing_when_nothing_can_be_found(monkeypatch, n_before):
    """A run that follows no alert asks only whether patches recur, which a before side of two
    acquisitions or fewer never shows (a comparison of two dates): then no chunk is read again.
    With more before acquisitions, or with the after sightings asked for, the views are read."""
    from changedetect.alerting import site_findings, site_views

    _, n, pixels, patches, sides = _patches_and_sides()
    stack, comp = sides[0]
    before = (
        stack.isel(time=slice(0, n_before)),
        dataclasses.replace(
            comp, valid=comp.valid.isel(dim_0=slice(0, n_before)), members=comp.members[:n_before]
        ),
    )
    sides = [before, sides[1]]
    calls = _count_site_views(monkeypatch)
    found = site_findings(patches, pixels, sides, after=False)
    assert set(found) == {p.label for p in patches}
    views = site_views(patches, pixels, sides)
    for label, seen in found.items():
        assert seen.recurs == views[label].recurs() and seen.after is None
    assert sum(calls) == (n if n_before > 2 else 0)
    calls.clear()
    site_findings(patches, pixels, sides, after=True)
    assert sum(calls) == n
