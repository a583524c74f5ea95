"""Typed run configuration: YAML is validated once here, then passed on as objects."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .models import TimeWindow
from .types import ANALYSIS_BANDS, QUALITY_BANDS

KNOWN_BANDS = (
    *ANALYSIS_BANDS,
    *QUALITY_BANDS,
    "B01",
    "B05",
    "B06",
    "B07",
    "B8A",
    "B09",
    "B10",
    "SKIP",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Sensor presets: file band order (None = bands are named in the files) and DN -> reflectance.
SENSOR_PRESETS: dict[str, dict[str, Any]] = {
    "sentinel2_l2a": {"bands": None, "scale": 1e-4, "offset": 0.0},
    "sentinel2_l2a_baseline04": {"bands": None, "scale": 1e-4, "offset": -0.1},
    "sentinel2_l1c": {"bands": None, "scale": 1e-4, "offset": 0.0},
    "landsat_tm_dn": {
        "bands": ["B02", "B03", "B04", "B08", "B11", "B12"],
        "scale": 1.0 / 255.0,
        "offset": 0.0,
    },
    # Landsat 4-9 Collection 2 Level-2 surface reflectance (USGS: 0.0000275 x DN - 0.2), its
    # bands mapped onto the Sentinel-2 names (blue B02 ... SWIR2 B12) and QA_PIXEL
    "landsat_c2_l2": {"bands": None, "scale": 2.75e-5, "offset": -0.2},
    "reflectance": {"bands": None, "scale": 1.0, "offset": 0.0},
}


class SensorConfig(_Model):
    """Which file bands are which, and how stored numbers scale to reflectance."""

    preset: Literal[
        "sentinel2_l2a",
        "sentinel2_l2a_baseline04",
        "sentinel2_l1c",
        "landsat_tm_dn",
        "landsat_c2_l2",
        "reflectance",
    ] = "sentinel2_l2a"
    """Named sensor defaults; `bands`, `scale` and `offset` below override them."""
    bands: list[str] | None = None
    """Band names of a multi-band file in file order (e.g. [B02, B03, B04, B08, B11, B12]);
    use SKIP for a band to ignore. Leave empty when the files name their bands."""
    scale: float | None = Field(default=None, gt=0)
    """Reflectance = stored value * scale + offset."""
    offset: float | None = None
    """Added after scaling (Sentinel-2 L2A from processing baseline 04.00 uses -0.1)."""
    nodata: float | None = 0
    """Stored value that marks missing pixels (None: every value is data)."""

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, bands: list[str] | None) -> list[str] | None:
        if bands is None:
            return None
        unknown = [b for b in bands if b not in KNOWN_BANDS]
        if unknown:
            raise ValueError(f"unknown band name(s) {unknown}; allowed: {', '.join(KNOWN_BANDS)}")
        named = [b for b in bands if b != "SKIP"]
        if len(set(named)) != len(named):
            raise ValueError(f"band names repeat in {bands}")
        return bands

    def resolved_bands(self) -> list[str] | None:
        return self.bands if self.bands is not None else SENSOR_PRESETS[self.preset]["bands"]

    def resolved_scale(self) -> float:
        return self.scale if self.scale is not None else SENSOR_PRESETS[self.preset]["scale"]

    def resolved_offset(self) -> float:
        return self.offset if self.offset is not None else SENSOR_PRESETS[self.preset]["offset"]


class SyntheticSourceConfig(_Model):
    """A seeded synthetic scene with planted disturbances and its ground truth."""

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 42
    """Same seed, same scene, same truth."""
    revisit_days: int = Field(default=10, ge=1, le=60)
    """Days between synthetic acquisitions."""
    cloud_cover: float = Field(default=0.25, ge=0.0, le=1.0)
    """Mean cloud fraction of an acquisition."""
    noise: float = Field(default=0.01, ge=0.0, le=0.1)
    """Sensor noise, reflectance standard deviation."""
    crop_rotation: float = Field(default=0.15, ge=0.0, le=1.0)
    """Share of crop fields that grow a different crop from one year to the next (a false-alarm
    source: a green wheat field one spring is bare maize ground the next)."""
    changes_from: dt.date = dt.date(2024, 7, 1)
    """Earliest start of the new planted disturbances; put it just after the before window."""
    changes_until: dt.date = dt.date(2025, 3, 31)
    """Latest start of the new planted disturbances; put it just before the after window (the
    truth lists the changes that start between the two windows)."""
    wet_days: tuple[dt.date, ...] = ()
    """Acquisition days after rain: bare and cropped soil is darker, most in the SWIR (a
    false-alarm source that passes with the next dry day)."""

    @model_validator(mode="after")
    def _ordered(self) -> SyntheticSourceConfig:
        if self.changes_until < self.changes_from:
            raise ValueError(
                f"changes_until {self.changes_until} is before changes_from {self.changes_from}"
            )
        return self


class LocalSourceConfig(_Model):
    """Acquisitions on disk: multi-band GeoTIFFs or folders of single-band `*_<BAND>.tif` files."""

    kind: Literal["local"] = "local"
    path: Path
    """Folder holding one entry per acquisition (a file, or a folder of band files)."""
    date_pattern: str = r"(\d{8})"
    """Regular expression whose first group is the acquisition date YYYYMMDD in the entry name."""


class RemoteSourceConfig(_Model):
    """What every networked source shares: the download cache and how hard to push the service."""

    cache_dir: Path = Path("cache")
    """Fetched imagery is kept here as COGs; a second run over the same window reads it from here."""
    max_cloud_cover: float = Field(default=60.0, ge=0.0, le=100.0)
    """Acquisitions whose scene cloud cover (percent) is above this are not fetched."""
    max_concurrent_requests: int = Field(default=4, ge=1, le=32)
    """Requests in flight at once."""
    requests_per_second: float = Field(default=5.0, gt=0.0)
    """Upper bound on the request rate, whatever the concurrency."""
    max_retries: int = Field(default=5, ge=0, le=20)
    """Retries of a request that got HTTP 429, a 5xx, a timeout or a broken body."""
    timeout_s: float = Field(default=120.0, gt=0.0)
    """Timeout of every HTTP call, in seconds."""


class SentinelHubSourceConfig(RemoteSourceConfig):
    """Sentinel-2 through the Sentinel Hub Catalog and Process APIs (sentinel-hub.com or CDSE).

    Credentials never go here: they come from SH_CLIENT_ID / SH_CLIENT_SECRET in the environment or
    from the Prefect secret blocks named below."""

    kind: Literal["sentinelhub"] = "sentinelhub"
    base_url: str = "https://services.sentinel-hub.com"
    """Service root; https://sh.dataspace.copernicus.eu for the Copernicus Data Space Ecosystem.
    The SH_BASE_URL environment variable overrides it."""
    token_url: str | None = None
    """OAuth token endpoint; None: CDSE's identity service for sh.dataspace.copernicus.eu, else the
    main sentinel-hub.com deployment's (it authenticates for every deployment, as in sentinelhub-py).
    SH_TOKEN_URL overrides it."""
    collection: Literal["sentinel-2-l2a", "sentinel-2-l1c"] = "sentinel-2-l2a"
    """Data collection to search and fetch."""
    sample_type: Literal["UINT16", "FLOAT32"] = "UINT16"
    """Pixel type requested from the Process API (UINT16 is half the bytes)."""
    max_tile_px: int = Field(default=2500, ge=64, le=2500)
    """Largest request edge in pixels (the Process API allows 2500)."""
    client_id_block: str | None = None
    """Name of a Prefect Secret block holding the client id (used when SH_CLIENT_ID is unset)."""
    client_secret_block: str | None = None
    """Name of a Prefect Secret block holding the client secret (when SH_CLIENT_SECRET is unset)."""


class StacSourceConfig(RemoteSourceConfig):
    """Any STAC API (Earth Search, Planetary Computer, a private catalog) via pystac-client and
    odc-stac."""

    kind: Literal["stac"] = "stac"
    url: str
    """STAC API root, e.g. https://earth-search.aws.element84.com/v1."""
    collection: str = "sentinel-2-l2a"
    """Collection id in that catalog."""
    assets: dict[str, str] = {
        "B02": "blue",
        "B03": "green",
        "B04": "red",
        "B08": "nir",
        "B11": "swir16",
        "B12": "swir22",
        "SCL": "scl",
    }
    """Band name -> asset key in this catalog (the default is Earth Search's sentinel-2-l2a)."""
    cloud_cover_property: str = "eo:cloud_cover"
    """Item property holding the scene cloud cover in percent."""
    signer: str | None = None
    """Request signing hook as `module:function` taking and returning a pystac Item (e.g.
    `planetary_computer:sign`); None: assets are read as they are."""

    @field_validator("assets")
    @classmethod
    def _known_asset_bands(cls, assets: dict[str, str]) -> dict[str, str]:
        unknown = [b for b in assets if b not in KNOWN_BANDS or b == "SKIP"]
        if unknown:
            raise ValueError(f"unknown band name(s) {unknown}; allowed: {', '.join(KNOWN_BANDS)}")
        return assets

    @field_validator("signer")
    @classmethod
    def _signer_form(cls, signer: str | None) -> str | None:
        if signer is not None and not re.fullmatch(r"[\w.]+:[\w.]+", signer):
            raise ValueError(f"signer {signer!r} must look like module:function")
        return signer


SourceConfig = Annotated[
    SyntheticSourceConfig | LocalSourceConfig | SentinelHubSourceConfig | StacSourceConfig,
    Field(discriminator="kind"),
]


class AoiConfig(_Model):
    """An area of interest: a WGS84 bounding box, analysed on a projected grid."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Short identifier, used in clue ids and output folder names."""
    bbox: tuple[float, float, float, float] | None = None
    """[west, south, east, north] in degrees (WGS84). None: the extent of the imagery."""
    crs: str | None = None
    """Analysis CRS (e.g. EPSG:32649). None: the UTM zone of the AOI centre."""
    resolution: float = Field(default=10.0, gt=0)
    """Analysis pixel size in CRS units (metres)."""

    @field_validator("bbox")
    @classmethod
    def _ordered(cls, bbox: tuple[float, float, float, float] | None) -> Any:
        if bbox is None:
            return None
        west, south, east, north = bbox
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise ValueError(
                f"bbox {list(bbox)} must be [west, south, east, north] in degrees, west < east, "
                "south < north"
            )
        return bbox


class WindowConfig(_Model):
    """A date interval, both ends included."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> WindowConfig:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def to_window(self) -> TimeWindow:
        return TimeWindow(self.start, self.end)


class DetectionConfig(_Model):
    """Change decision, cleaning and mapping unit."""

    chunk_size: int = Field(default=512, ge=64, le=8192)
    """Dask chunk edge in pixels: memory scales with it, not with the AOI (the pass holds a
    row of chunks of a stripe of columns). On the 10,000² bench (`bench/memory.py`) 1024 px
    took the pass to 1.7 GB (with a 256 MB GDAL cache), 512 px to 1.0 GB, in about the same
    CPU time."""
    false_alarm_rate: float = Field(default=1e-6, gt=0.0, lt=0.5)
    """Per-pixel false-alarm rate of a pixel that stands alone, under a Gaussian model of unchanged
    ground calibrated on the scene. Real imagery has heavier tails (misregistration, shadows,
    phenology), hence the small default; raise it to find weaker change, lower it for fewer clues."""
    support_level: float = Field(default=0.03, gt=0.0, lt=0.5)
    """Looser per-pixel level for a pixel whose neighbourhood mostly passes it too: a coherent
    patch is believed on weaker evidence than a lone pixel. Set it <= false_alarm_rate to turn
    the neighbourhood test off."""
    support_m: float = Field(default=90.0, gt=0.0, le=1000.0)
    """Ground edge in metres of that neighbourhood, rounded to an odd number of pixels (at most
    31): 9 px at 10 m, 3 px at 30 m. A neighbourhood is a piece of ground, not a count of pixels:
    at 30 m a 9-pixel window would ask a small site for support from 270 m around it."""
    support_size: int | None = Field(default=None, ge=1, le=31)
    """Edge in pixels of that neighbourhood, overriding `support_m` (1 turns the neighbourhood
    test off)."""

    def support_pixels(self, pixel_m: float) -> int:
        """The neighbourhood's edge in pixels on a grid of `pixel_m` metre pixels."""
        if self.support_size is not None:
            return self.support_size
        return min(max(1, round(self.support_m / pixel_m)) | 1, 31)

    min_area_m2: float = Field(default=1000.0, gt=0)
    """Minimum mapping unit; smaller patches are dropped (0.1 ha by default)."""
    median_size: int = Field(default=3, ge=1, le=9)
    """Edge of the median filter applied to band differences (1 disables it)."""
    cloud_mask: Literal["auto", "scl", "qa_pixel", "s2cloudless", "multitemporal", "none"] = "auto"
    """How clouds and their shadows are found: `scl` (the L2A scene classification), `qa_pixel`
    (the Fmask flags of Landsat Collection 2's QA_PIXEL band, mapped as band QA_PIXEL), `s2cloudless`
    (the L1C classifier shipped in the s2cloudless package; needs the L1C bands B01, B02, B04,
    B05, B08, B8A, B09, B10, B11, B12), `multitemporal` (each acquisition against its pixels' median
    over the window; any sensor, 3 acquisitions or more), `none`. `auto`: SCL where the imagery
    has it, then QA_PIXEL, s2cloudless for the sentinel2_l1c preset when its bands are there,
    else multitemporal. Each clue records the mask it was found under (`cloud_mask`)."""
    cloud_classes: list[int] = [0, 1, 3, 8, 9, 10, 11]
    """SCL classes treated as invalid: no data, saturated, shadow, cloud, cirrus, snow."""
    min_valid_observations: int = Field(default=1, ge=1)
    """A pixel needs this many valid observations in each window to be analysed."""
    min_confidence: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Patches whose confidence (the calibrated probability that the ground really changed) is
    below this are not reported; 0 reports every patch. Fewer false alarms for fewer real sites:
    on the labelled scenes, leave-one-scene-out, a threshold of 0.15-0.3 raised precision in every
    OSCD city (by 4-22 %) for 1-21 % of its recall, and cost Taizhou 4 % of its recall (README,
    bench/quality_cv.py, column "+ scorer")."""


class ZonesConfig(_Model):
    """Protection zones (GeoJSON or GeoPackage) attached to every clue."""

    path: Path
    name_field: str = "name"
    tier_field: str = "tier"
    county_field: str = "county"
    limit_to_zones: bool = False
    """Only report clues that fall inside a zone."""


class OutputConfig(_Model):
    """Where and what to write."""

    dir: Path = Path("out")
    """Output root; each AOI gets a sub-folder."""
    chips: bool = True
    """Write before/after PNG chips per clue."""
    chip_size: int = Field(default=128, ge=32, le=1024)
    """Chip edge in pixels."""
    state_file: Path | None = None
    """Run state (newest acquisition analysed per AOI) for incremental runs; None: state.json in
    `dir`."""

    def state_path(self) -> Path:
        return self.state_file if self.state_file is not None else self.dir / "state.json"

    def alerts_path(self) -> Path:
        """The alert state: ``alerts.json`` beside the run state."""
        return self.state_path().parent / "alerts.json"


class AlertsConfig(_Model):
    """How a suspect change is followed across acquisitions and handed to the case tracker."""

    confirm_after: int = Field(default=2, ge=1, le=20)
    """Later clear observations that must show a change again before its alert is `confirmed`
    (the first sighting makes it `probable`; a clear night showing the ground as before, while
    it is still probable, makes it `dropped`)."""
    issue_probable: bool = False
    """Let the case tracker open cases for clues whose alert is still `probable`; off, they are
    held back until a later run confirms them (clues of `dropped` alerts never open a case)."""


class BaselineConfig(_Model):
    """What the acquisitions analysed are compared with."""

    kind: Literal["window", "same_season"] = "window"
    """`window`: the composite of the `before` window. `same_season`: the composite of the same
    weeks of the `years` years before the acquisitions analysed (their first to last date,
    widened by `days` on each side); each pixel's spread across those years then enters the change
    test, so the season (green-up, harvest) and a crop that differs from year to year are not
    taken for disturbance. Needs a source with that much history; a year without acquisitions
    is left out. The defaults are OPERA DIST-ALERT's baseline: every clear acquisition of the
    three years before within a 31-day window (±15 days). With `same_season` the acquisitions of
    the `before` window are loaded too, not for the composite but to tell ground already seen as
    it is now (a field bare after last summer's harvest) from a new change."""
    days: int = Field(default=15, ge=0, le=120)
    years: int = Field(default=3, ge=1, le=10)

    def describe(self) -> str:
        """How a clue states its baseline."""
        if self.kind == "window":
            return "window"
        return f"same_season ±{self.days} d over {self.years} year{'s' if self.years > 1 else ''}"


class DaskConfig(_Model):
    """Where the heavy array work runs when the Prefect flow (`flows/nightly.py`) runs it."""

    scheduler_address: str | None = None
    """Address of a running dask distributed scheduler (e.g. `tcp://10.0.0.5:8786`) the flow
    computes each AOI's analysis on; None: dask's threaded scheduler in the flow's own process
    (on one machine, threads beat processes here). The CHANGEDETECT_DASK_SCHEDULER environment
    variable overrides it. `changedetect run` always computes in its own process."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for that scheduler before the AOI fails (a cluster that is down fails the
    AOI with a clear error instead of hanging the night)."""

    @field_validator("scheduler_address")
    @classmethod
    def _address_form(cls, address: str | None) -> str | None:
        if address is not None and not re.fullmatch(r"([a-z0-9]+://)?[^\s/]+", address):
            raise ValueError(
                f"{address!r} is not a dask scheduler address like tcp://10.0.0.5:8786"
            )
        return address


class TrackerConfig(_Model):
    """Where nightly runs hand their clues on."""

    db: str | None = None
    """Case tracker database URL (sqlite:///file.db, postgresql+psycopg://...); None: the
    CHANGEDETECT_DB environment variable (or the file CHANGEDETECT_DB_FILE names), else a JSONL
    ledger in output.dir. Put no password here: use CHANGEDETECT_DB_FILE (a mounted secret) or
    CHANGEDETECT_DB for PostgreSQL."""

    @field_validator("db")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and re.search(r"://[^/@]*:[^/@]*@", url):
            raise ValueError(
                "the URL carries a password; put the URL in the file CHANGEDETECT_DB_FILE names "
                "(a mounted secret), or in CHANGEDETECT_DB"
            )
        return url


class RunConfig(_Model):
    """Everything one run needs."""

    name: str = "run"
    source: SourceConfig = SyntheticSourceConfig()
    sensor: SensorConfig = SensorConfig()
    aois: list[AoiConfig] = Field(min_length=1)
    before: WindowConfig
    """The before window; with `baseline.kind: same_season` the baseline comes from the same
    season of earlier years instead (synthetic sources still place their changes after it)."""
    after: WindowConfig
    baseline: BaselineConfig = BaselineConfig()
    detection: DetectionConfig = DetectionConfig()
    zones: ZonesConfig | None = None
    output: OutputConfig = OutputConfig()
    alerts: AlertsConfig = AlertsConfig()
    tracker: TrackerConfig = TrackerConfig()
    dask: DaskConfig = DaskConfig()

    @model_validator(mode="after")
    def _windows(self) -> RunConfig:
        if self.after.start <= self.before.end:
            raise ValueError(
                f"after window starts {self.after.start}, not after the before window ends "
                f"{self.before.end}"
            )
        names = [a.name for a in self.aois]
        if len(set(names)) != len(names):
            raise ValueError(f"AOI names repeat: {names}")
        return self


_URL_PASSWORD = re.compile(r"(://[^/:@]*:)[^/@]*@")
_SECRET_KEY = re.compile(r"secret|password|passwd|token|api_?key|credential", re.IGNORECASE)


def _format_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        value = err.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        shown = _URL_PASSWORD.sub(r"\1***@", shown)
        if _SECRET_KEY.search(loc):
            shown = "<hidden>"  # an error message is logged: never echo what may be a credential
        if err["type"] == "missing":
            lines.append(f"{loc or '<root>'}: required key is missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key (value {shown}); check the spelling")
        else:
            lines.append(f"{loc or '<root>'} = {shown}: {err['msg']}")
    return f"invalid config {source}: " + "; ".join(lines)


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a mapping as a RunConfig; relative paths resolve against `base_dir`."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: top level must be a mapping of keys")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return config


def _resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    updates: dict[str, Any] = {}
    if isinstance(config.source, LocalSourceConfig):
        updates["source"] = config.source.model_copy(update={"path": resolve(config.source.path)})
    if isinstance(config.source, RemoteSourceConfig):
        updates["source"] = config.source.model_copy(
            update={"cache_dir": resolve(config.source.cache_dir)}
        )
    if config.output.state_file is not None:
        updates["output"] = config.output.model_copy(
            update={"state_file": resolve(config.output.state_file)}
        )
    if config.zones is not None:
        updates["zones"] = config.zones.model_copy(update={"path": resolve(config.zones.path)})
    return config.model_copy(update=updates)


class _ConfigLoader(yaml.SafeLoader):
    """YAML without its own date parsing: dates stay text for the models to parse, which name the
    key of an impossible date (PyYAML's parser fails on 2024-02-30 naming nothing)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config; relative paths in it are relative to the working directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(path), base_dir=Path.cwd())
