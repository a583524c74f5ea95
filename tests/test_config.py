from pathlib import Path

import pytest
from pydantic import ValidationError

from changedetect.config import DetectionConfig, load_config, parse_config
from changedetect.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "aois": [{"name": "a", "bbox": [108.0, 34.0, 108.1, 34.1]}],
    "before": {"start": "2024-04-01", "end": "2024-06-30"},
    "after": {"start": "2025-04-01", "end": "2025-06-30"},
}


def with_(**changes):
    data = {**BASE, **changes}
    return data


def test_demo_config_is_valid_and_matches_embedded_copy():
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert config.source.kind == "synthetic"
    assert config.aois[0].name == "qinling-demo"
    embedded = (ROOT / "changedetect" / "data" / "demo.yaml").read_text()
    assert (ROOT / "configs" / "demo.yaml").read_text() == embedded


def test_the_demo_and_the_flow_on_the_demo_config_run_the_same_analysis_apart(tmp_path):
    """`changedetect demo` and the nightly flow on configs/demo.yaml: the same zones, so the same
    clues, and different output folders, so neither overwrites the other."""
    from changedetect.cli import build_parser
    from changedetect.demo import demo_config, write_demo_zones

    flow = load_config(ROOT / "configs" / "demo.yaml")
    demo = demo_config(Path(build_parser().parse_args(["demo"]).out))
    assert demo.output.dir != flow.output.dir
    assert demo.zones is not None and flow.zones is not None
    assert demo.zones.path.read_bytes() == flow.zones.path.read_bytes()
    # both are the zone layer the demo's AOI was drawn with
    written = write_demo_zones(flow, tmp_path / "zones.geojson")
    assert written.path.read_bytes() == flow.zones.path.read_bytes()
    same = {"output", "zones"}
    assert demo.model_dump(exclude=same) == flow.model_dump(exclude=same)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("sentinelhub.yaml", "sentinelhub"),
        ("stac-earth-search.yaml", "stac"),
        ("local-folder.yaml", "local"),
    ],
)
def test_example_configs_are_valid(name, kind):
    config = load_config(ROOT / "configs" / name)
    assert config.source.kind == kind


def test_remote_source_settings_are_validated():
    with pytest.raises(ConfigError, match=r"source\.sentinelhub\.max_cloud_cover = 140"):
        parse_config(with_(source={"kind": "sentinelhub", "max_cloud_cover": 140}))
    with pytest.raises(ConfigError, match=r"source\.stac\.url: required key is missing"):
        parse_config(with_(source={"kind": "stac"}))
    with pytest.raises(ConfigError, match=r"unknown band name\(s\) \['B99'\]"):
        parse_config(with_(source={"kind": "stac", "url": "http://x", "assets": {"B99": "x"}}))
    # credentials come from the environment or secret blocks, never from a config file
    with pytest.raises(
        ConfigError, match=r"source\.sentinelhub\.client_secret: unknown key"
    ) as err:
        parse_config(with_(source={"kind": "sentinelhub", "client_secret": "s3cr3t"}))
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(ConfigError, match="module:function"):
        parse_config(with_(source={"kind": "stac", "url": "http://x", "signer": "not a hook"}))


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"detection\.min_aera_m2: unknown key"):
        parse_config(with_(detection={"min_aera_m2": 5}))


def test_wrong_type_names_key_value_and_rule():
    with pytest.raises(ConfigError) as err:
        parse_config(with_(detection={"min_area_m2": "big"}))
    msg = str(err.value)
    assert "detection.min_area_m2" in msg and "'big'" in msg and "number" in msg


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"false_alarm_rate = 0\.9.*less than 0\.5"):
        parse_config(with_(detection={"false_alarm_rate": 0.9}))


def test_unknown_source_kind_lists_allowed():
    with pytest.raises(ConfigError, match="synthetic.*local"):
        parse_config(with_(source={"kind": "ftp"}))


def test_missing_required_key():
    data = dict(BASE)
    del data["before"]
    with pytest.raises(ConfigError, match="before: required key is missing"):
        parse_config(data)


def test_windows_must_be_ordered():
    with pytest.raises(ConfigError, match="after window starts"):
        parse_config(with_(after={"start": "2024-05-01", "end": "2024-07-01"}))


def test_bbox_must_be_ordered():
    with pytest.raises(ConfigError, match="west < east"):
        parse_config(with_(aois=[{"name": "a", "bbox": [108.2, 34.0, 108.1, 34.1]}]))


def test_band_mapping_validated():
    with pytest.raises(ConfigError, match="unknown band name"):
        parse_config(with_(sensor={"preset": "landsat_tm_dn", "bands": ["B02", "RED"]}))


def test_sensor_preset_resolves():
    config = parse_config(with_(sensor={"preset": "landsat_tm_dn"}))
    assert config.sensor.resolved_bands() == ["B02", "B03", "B04", "B08", "B11", "B12"]
    assert config.sensor.resolved_scale() == pytest.approx(1 / 255)


def test_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("aois: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_the_support_neighbourhood_is_a_piece_of_ground():
    det = DetectionConfig()
    assert det.support_pixels(10.0) == 9  # Sentinel-2
    assert det.support_pixels(30.0) == 3  # Landsat
    assert det.support_pixels(20.0) == 5  # 4.5 px, rounded to an odd edge
    assert det.support_pixels(1.0) == 31  # capped
    assert DetectionConfig(support_size=1).support_pixels(30.0) == 1  # pixels override
    with pytest.raises(ValidationError):
        DetectionConfig(support_m=0)
