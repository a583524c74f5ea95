"""Imagery from any STAC API (Earth Search, Planetary Computer, a private catalog).

``search`` asks the API (``pystac_client``) for the items of one collection over the grid's WGS84
bounds, inside the time window and under the cloud-cover limit (STAC ``query`` or CQL2 ``filter``,
whichever the API conforms to, and checked again here); the items of one solar day, e.g.
neighbouring MGRS tiles, make one :class:`Acquisition`. Item search is all the API must offer:
the collection is looked up (``/collections/{id}``) only to explain an empty answer, and only
where the API has that endpoint.

Items need not store reflectance alike: Sentinel-2 processing baseline 04.00 (from 2022-01-25)
adds 1000 to every number, and providers differ in whether they took it off again. ``search`` works
out, per item and reflectance asset, how its numbers scale to reflectance (:func:`asset_radiometry`:
``earthsearch:boa_offset_applied``, then the asset's ``raster:bands``, then
``s2:processing_baseline``). An item that says nothing takes what the other items of the window
agree on (the sensor config when none says anything); when they disagree, the search is refused
naming the item, since guessing would leave it 0.1 off.

``load`` fetches, for each acquisition and each piece of the analysis grid (at most ``tile_px``
pixels a side, so memory does not grow with the area), the mapped assets with ``odc.stac.load``
onto exactly those pixels (the piece's GeoBox, no snapping). Each item's numbers are brought to
the sensor config's scale and offset (:func:`harmonise`) before the items of the day are fused,
kept in their type (e.g. uint16 DN), and written as a COG into the :class:`DownloadCache` before
moving on. Pieces already in the cache are not fetched again: a
second load makes no request. The cached files are then read lazily by :class:`LocalSource`, which
applies the sensor's scale and offset, right for every item.

HTTP: API calls go through a ``requests`` session with a urllib3 ``Retry`` (exponential backoff,
429 and 5xx retried, ``Retry-After`` honoured), ``timeout_s`` and a request-rate limit; asset reads
get GDAL's timeout and retry options and ``max_concurrent_requests`` reader threads.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import odc.stac
import pystac
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3 import Retry

from ...config import KNOWN_BANDS, SensorConfig, StacSourceConfig
from ...errors import ConfigError, MissingBandError, RemoteServiceError, SourceError
from ...grids import wgs84_bounds
from ...models import Acquisition, TimeWindow
from ...types import QUALITY_BANDS
from ..atomic import atomic_path
from ..cache import CacheKey, DownloadCache
from ..raster import RASTER_ERRORS
from .local import LocalSource
from .remote import RateLimiter, grid_id, split_grid, vrt_mosaic

log = logging.getLogger(__name__)

__all__ = [
    "Radiometry",
    "StacSource",
    "asset_radiometry",
    "grid_id",
    "harmonise",
    "resolve_signer",
    "solar_day",
    "wgs84_bounds",
]

#: Largest edge, in pixels, of the grid pieces fetched and cached one at a time: a piece of all
#: bands is held in memory while it is fetched (2048 px x 7 uint16 bands: 59 MB).
TILE_PX = 2048

#: urllib3 backoff factor in seconds: retries wait 0, 2x, 4x, ... this (capped at 120 s).
RETRY_BACKOFF_S = 1.0

#: HTTP statuses worth retrying: rate limited, or a server/gateway failure.
RETRY_STATUSES = (429, 500, 502, 503, 504)

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}

Signer = Callable[[pystac.Item], "pystac.Item | None"]

#: ESA's Sentinel-2 quantification: reflectance = (DN + offset) / 10000.
S2_QUANTIFICATION = 10000
#: The BOA_ADD_OFFSET (L2A; RADIO_ADD_OFFSET in L1C) of processing baseline 04.00 and later.
S2_ADD_OFFSET_DN = -1000
#: The first processing baseline with that offset (in products from 2022-01-25 on).
S2_OFFSET_BASELINE = (4, 0)

#: Item properties saying whether the provider already applied the offset to the numbers
#: (Earth Search v1, and v0 before it).
BOA_OFFSET_APPLIED = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
#: Item properties giving the Sentinel-2 processing baseline ("04.00").
PROCESSING_BASELINE = ("s2:processing_baseline", "sentinel:processing_baseline")


# --------------------------------------------------------------------------------------------
# Small pure helpers


def resolve_signer(spec: str) -> Signer:
    """The callable named by ``module:function`` (e.g. ``planetary_computer:sign``).

    Raises ConfigError when the module cannot be imported or has no such callable."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"source.signer {spec!r}: cannot import module {module_name!r} ({exc}); install it "
            "(e.g. pip install planetary-computer) or fix the name"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise ConfigError(
            f"source.signer {spec!r}: module {module_name!r} has no function {attr!r}; give "
            "module:function of a callable taking and returning a pystac Item"
        )
    return obj  # type: ignore[no-any-return]


def _centre_lon(grid: GeoBox) -> float:
    west, _, east, _ = wgs84_bounds(grid)
    return (west + east) / 2


def solar_day(when: dt.datetime, lon: float) -> dt.date:
    """Local solar date at longitude `lon` (the rule ``odc.stac.load(groupby="solar_day")`` uses)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return (when + dt.timedelta(seconds=int(lon * 24 * 3600 / 360))).date()


def _band_order(bands: Sequence[str]) -> list[str]:
    order = {b: i for i, b in enumerate(KNOWN_BANDS)}
    return sorted(dict.fromkeys(bands), key=lambda b: (order.get(b, len(order)), b))


@dataclass(frozen=True)
class Radiometry:
    """How stored numbers become reflectance: ``stored * scale + offset``."""

    scale: float
    offset: float
    #: What said so (for messages), e.g. "s2:processing_baseline 04.00".
    basis: str = field(default="", compare=False)

    def same_as(self, other: Radiometry) -> bool:
        return math.isclose(self.scale, other.scale, rel_tol=1e-9) and math.isclose(
            self.offset, other.offset, abs_tol=1e-9
        )

    def __str__(self) -> str:
        return f"scale {self.scale:g} offset {self.offset:g} ({self.basis})"


def _baseline(properties: Mapping[str, Any]) -> tuple[tuple[int, int], str] | None:
    for name in PROCESSING_BASELINE:
        text = properties.get(name)
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text)) if text is not None else None
        if match:
            return (int(match[1]), int(match[2])), f"{name} {text}"
    return None


def _s2_radiometry(baseline: tuple[int, int], basis: str) -> Radiometry:
    offset = S2_ADD_OFFSET_DN if baseline >= S2_OFFSET_BASELINE else 0
    return Radiometry(1 / S2_QUANTIFICATION, offset / S2_QUANTIFICATION, basis)


def asset_radiometry(item: pystac.Item, key: str) -> Radiometry | None:
    """How asset `key` of `item` stores reflectance, from what the item says, or None when it
    says nothing that tells. In order of authority:

    1. ``earthsearch:boa_offset_applied`` true: the provider already applied the offset (scale
       1/10000, offset 0), whatever the asset's ``raster:bands`` say (Earth Search left -0.1 there
       on such items). False: the numbers are ESA's, so the processing baseline decides when the
       item gives it;
    2. the asset's ``raster:bands`` scale and offset (a missing offset is 0; a missing scale one
       of 1/10000, since a scale of 1 on integer reflectance means the provider did not say);
    3. ``s2:processing_baseline``: from 04.00 on, DN = 10000 * reflectance + 1000.

    The acquisition date is not used: reprocessed archives (Sentinel-2 Collection 1, baseline
    05.00) carry the offset on images from before 2022 too.
    """
    props = item.properties
    baseline = _baseline(props)
    for name in BOA_OFFSET_APPLIED:
        applied = props.get(name)
        if applied is True:
            return Radiometry(1 / S2_QUANTIFICATION, 0.0, f"{name} true")
        if applied is False and baseline is not None:
            return _s2_radiometry(baseline[0], f"{name} false, {baseline[1]}")
    asset = item.assets.get(key)
    bands = asset.extra_fields.get("raster:bands") if asset is not None else None
    info = bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], dict) else {}
    scale, offset = info.get("scale"), info.get("offset")
    if isinstance(scale, int | float) or isinstance(offset, int | float):
        return Radiometry(
            float(scale) if isinstance(scale, int | float) else 1 / S2_QUANTIFICATION,
            float(offset) if isinstance(offset, int | float) else 0.0,
            "raster:bands",
        )
    if baseline is not None:
        return _s2_radiometry(*baseline)
    return None


def harmonise(
    plane: np.ndarray, nodata: float | None, stored: Radiometry, target: Radiometry
) -> np.ndarray:
    """`plane`, one item's stored numbers, re-expressed in `target`'s scale and offset (the same
    reflectance), in its own type; no-data stays no-data.

    Integers are rounded and kept inside their type and off the no-data value: a reflectance below
    what `target` can store (baseline 04.00 keeps slightly negative ones over dark water) becomes
    its smallest valid number, as products before 04.00 stored it (ESA clamped to DN 1)."""
    if stored.same_as(target):
        return plane
    values = (plane.astype(np.float64) * stored.scale + (stored.offset - target.offset)) / (
        target.scale
    )
    has_nodata = nodata is not None and not np.isnan(nodata)
    if np.issubdtype(plane.dtype, np.integer):
        info = np.iinfo(plane.dtype)
        low, high = int(info.min), int(info.max)
        if has_nodata and nodata == low:
            low += 1
        elif has_nodata and nodata == high:
            high -= 1
        values = np.clip(np.rint(values), low, high)
    if has_nodata:
        values = np.where(plane == nodata, plane, values)
    return values.astype(plane.dtype)


_QUERY_STRING = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def _redact(text: str) -> str:
    """`text` without URL query strings (signed hrefs carry access tokens there)."""
    return _QUERY_STRING.sub(r"\1?...", " ".join(text.split()))


class _FailedReads(logging.Handler):
    """Collects the URIs odc-stac logs when a read fails (its exceptions do not always name them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.uris: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and isinstance(record.args, tuple):
            self.uris.append(str(record.args[0]))


@contextmanager
def _failed_reads() -> Iterator[_FailedReads]:
    handler = _FailedReads()
    logger = logging.getLogger("odc.loader._rio")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------------------------
# The source


class StacSource:
    """A STAC API collection behind the :class:`ImagerySource` protocol, with a download cache.

    `tile_px` is the largest piece of the grid fetched at once (memory), `retry_backoff_s` the
    urllib3 backoff factor of API retries.
    """

    name = "stac"

    def __init__(
        self,
        config: StacSourceConfig,
        sensor: SensorConfig,
        *,
        tile_px: int = TILE_PX,
        retry_backoff_s: float = RETRY_BACKOFF_S,
    ) -> None:
        if tile_px < 16:
            raise ValueError(f"tile_px must be at least 16, got {tile_px}")
        self.config = config
        self.sensor = sensor
        self.cache = DownloadCache(config.cache_dir)
        self.tile_px = tile_px
        self.retry_backoff_s = retry_backoff_s
        # Resolved now so that a bad hook fails before any request.
        self._signer = resolve_signer(config.signer) if config.signer else None
        self._client: Client | None = None
        self._collection_checked = False
        self._limiter = RateLimiter(config.requests_per_second)
        self._items: dict[str, list[pystac.Item]] = {}
        #: item id -> band -> how that item stores the band (from the search that found it).
        self._radiometry: dict[str, dict[str, Radiometry]] = {}

    # -- search ------------------------------------------------------------------------------

    def search(self, grid: GeoBox, window: TimeWindow) -> list[Acquisition]:
        """Acquisitions (one per solar day) of the collection over `grid` inside `window` whose
        cloud cover is at most ``max_cloud_cover``, oldest first."""
        client = self._open()
        bbox = wgs84_bounds(grid)
        params: dict[str, Any] = {
            "collections": [self.config.collection],
            "bbox": list(bbox),
            "datetime": f"{window.start.isoformat()}/{window.end.isoformat()}",
        }
        params.update(self._cloud_params(client))
        method, url = self._search_endpoint(client)
        what = f"search of {self.config.collection} ({window.start} to {window.end})"
        try:
            items = list(client.search(method=method, **params).items())
        except APIError as exc:
            raise self._api_error(f"{method} {url}", what, exc) from None
        except pystac.STACError as exc:
            raise SourceError(
                f"STAC API {self.config.url}: malformed reply to the {what}: {exc}"
            ) from None
        if not items:
            self._check_collection(client)
        kept = [item for item in items if self._cloud_ok(item)]
        self._resolve_radiometry(kept, what)
        acquisitions = self._group(kept, _centre_lon(grid))
        log.info(
            "STAC %s: %d item(s), %d under %g%% cloud, %d acquisition(s)",
            what,
            len(items),
            len(kept),
            self.config.max_cloud_cover,
            len(acquisitions),
        )
        return acquisitions

    def _open(self) -> Client:
        if self._client is not None:
            return self._client
        retry = Retry(
            total=self.config.max_retries,
            backoff_factor=self.retry_backoff_s,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # search is a POST, and it is idempotent
            respect_retry_after_header=True,
            # Hand the last error response to pystac-client, whose APIError keeps status and body.
            raise_on_status=False,
        )
        try:
            # timeout and request_modifier go to open(): it re-applies them onto the StacApiIO.
            self._client = Client.open(
                self.config.url,
                stac_io=StacApiIO(max_retries=retry),
                timeout=self.config.timeout_s,
                request_modifier=self._limiter,
            )
        except APIError as exc:
            raise self._api_error(f"GET {self.config.url}", "landing page", exc) from None
        except (pystac.STACError, ValueError) as exc:
            raise SourceError(
                f"{self.config.url} is not a STAC API landing page ({exc}); check source.url"
            ) from None
        if not self._client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            raise SourceError(
                f"{self.config.url} does not offer STAC item search (no item-search conformance "
                "class); give the root of a STAC API: a static catalog cannot be searched"
            )
        return self._client

    def _search_endpoint(self, client: Client) -> tuple[str, str]:
        """(method, URL) of the search: POST (bodies carry filters best) unless only GET is
        advertised."""
        links = [link for link in client.links if link.rel == "search"]
        methods = {str(link.extra_fields.get("method") or "GET").upper() for link in links}
        method = "GET" if methods == {"GET"} else "POST"
        href = links[0].href if links else f"{self.config.url.rstrip('/')}/search"
        return method, href

    def _check_collection(self, client: Client) -> None:
        """Refuse a collection id the API says it does not have (an empty search cannot tell)."""
        if self._collection_checked:
            return
        cid = self.config.collection
        # Item search alone is a valid STAC API; without the Collections (or OGC Features) class
        # pystac-client would walk the landing page's child links instead, which such an API
        # need not have: nothing there would prove the id wrong.
        if not (
            client.conforms_to(ConformanceClasses.COLLECTIONS)
            or client.conforms_to(ConformanceClasses.FEATURES)
        ):
            log.warning(
                "STAC API %s found no item: cannot check that collection %r exists (the API has "
                "no collections endpoint); if it should have imagery here, check "
                "source.collection",
                self.config.url,
                cid,
            )
            self._collection_checked = True
            return
        try:
            found = client.get_collection(cid)
        except APIError as exc:
            raise self._api_error(f"GET collection {cid}", "collection lookup", exc) from None
        if found is None:
            try:
                known = sorted(c.id for c in client.get_collections())
            except APIError:
                known = []
            listed = ", ".join(known[:20]) if known else "none listed"
            raise SourceError(
                f"STAC API {self.config.url} has no collection {cid!r} (it has: {listed}); fix "
                "source.collection"
            )
        self._collection_checked = True

    def _cloud_params(self, client: Client) -> dict[str, Any]:
        """The server-side cloud-cover limit, in the dialect the API conforms to."""
        limit, prop = self.config.max_cloud_cover, self.config.cloud_cover_property
        if limit >= 100.0:
            return {}
        if client.conforms_to(ConformanceClasses.QUERY):
            return {"query": {prop: {"lte": limit}}}
        if client.conforms_to(ConformanceClasses.FILTER):
            return {
                "filter": {"op": "<=", "args": [{"property": prop}, limit]},
                "filter_lang": "cql2-json",
            }
        log.info(
            "STAC API %s offers neither query nor filter: cloud cover is checked here",
            self.config.url,
        )
        return {}

    def _cloud_cover(self, item: pystac.Item) -> float | None:
        value = item.properties.get(self.config.cloud_cover_property)
        return float(value) if isinstance(value, int | float) else None

    def _cloud_ok(self, item: pystac.Item) -> bool:
        # Checked here too: an API may ignore a query it does not understand.
        cover = self._cloud_cover(item)
        return cover is None or cover <= self.config.max_cloud_cover

    def _group(self, items: list[pystac.Item], lon: float) -> list[Acquisition]:
        by_day: dict[dt.date, list[pystac.Item]] = {}
        for item in items:
            if item.datetime is None:
                log.warning("STAC item %s has no datetime; skipped", item.id)
                continue
            by_day.setdefault(solar_day(item.datetime, lon), []).append(item)
        acquisitions = []
        for _, members in sorted(by_day.items()):
            members.sort(key=lambda it: (it.datetime, it.id))
            first = members[0].datetime
            assert first is not None
            covers = [c for c in (self._cloud_cover(it) for it in members) if c is not None]
            if first.tzinfo is not None:
                first = first.astimezone(dt.UTC).replace(tzinfo=None)
            acq = Acquisition(
                id="+".join(it.id for it in members),
                datetime=first,
                source=self.name,
                cloud_cover=round(sum(covers) / len(covers), 2) if covers else None,
            )
            self._items[acq.id] = members
            acquisitions.append(acq)
        return acquisitions

    def _target(self) -> Radiometry:
        """How the cached numbers store reflectance: as the sensor config says (LocalSource reads
        them with it)."""
        return Radiometry(
            self.sensor.resolved_scale(), self.sensor.resolved_offset(), "the sensor config"
        )

    def _resolve_radiometry(self, items: list[pystac.Item], what: str) -> None:
        """Remember how each item stores each reflectance band. An item that does not say takes
        what the others agree on (the sensor config when none says); when they disagree it is
        refused, since either guess could leave it 0.1 off."""
        target = self._target()
        for band, key in self.config.assets.items():
            if band in QUALITY_BANDS:
                continue
            said = {item.id: asset_radiometry(item, key) for item in items if key in item.assets}
            views: list[tuple[str, Radiometry]] = []  # an item for each distinct answer
            for iid, radiometry in said.items():
                if radiometry is not None and not any(radiometry.same_as(r) for _, r in views):
                    views.append((iid, radiometry))
            silent = [iid for iid, radiometry in said.items() if radiometry is None]
            if silent and len(views) > 1:
                examples = "; ".join(f"{iid}: {r}" for iid, r in views)
                raise SourceError(
                    f"STAC item {silent[0]} ({self.config.collection}) does not say how asset "
                    f"{key!r} stores reflectance (no {BOA_OFFSET_APPLIED[0]}, raster:bands "
                    f"scale/offset or {PROCESSING_BASELINE[0]}), and the other items of the "
                    f"{what} disagree ({examples}): its offset cannot be told. Narrow the time "
                    "window to one side of 2022-01-25 (Sentinel-2 processing baseline 04.00), or "
                    "use a catalog whose items say how they store it"
                )
            fallback = target
            if views:
                agreed = views[0][1]
                fallback = Radiometry(agreed.scale, agreed.offset, "as the window's other items")
            for iid, radiometry in said.items():
                self._radiometry.setdefault(iid, {})[band] = radiometry or fallback
        differ = [
            (item.id, r)
            for item in items
            for r in self._radiometry.get(item.id, {}).values()
            if not r.same_as(target)
        ]
        if differ:
            log.info(
                "STAC %s: %d item(s) store reflectance otherwise than %s (scale %g offset %g), "
                "brought to it per item; e.g. %s: %s",
                what,
                len({iid for iid, _ in differ}),
                target.basis,
                target.scale,
                target.offset,
                *differ[0],
            )

    def _api_error(self, request: str, what: str, exc: APIError) -> RemoteServiceError:
        status = getattr(exc, "status_code", None)
        reply = _redact(str(exc))[:300] or "no reply"
        if status is not None and status not in RETRY_STATUSES:
            # Not retried: the request itself was refused (bad parameters, no access).
            return RemoteServiceError(
                f"STAC API {self.config.url}: {request} ({what}) was refused (HTTP {status}: "
                f"{reply}); check source.url, source.collection and source.cloud_cover_property"
            )
        code = f"HTTP {status}: " if status else ""
        return RemoteServiceError(
            f"STAC API {self.config.url}: {request} ({what}) failed after "
            f"{self.config.max_retries} retries ({code}{reply}); try again later, or raise "
            "source.max_retries / source.timeout_s"
        )

    # -- load --------------------------------------------------------------------------------

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GeoBox,
        chunk_size: int,
    ) -> xr.Dataset:
        """Fetch what the cache lacks, then lazily load `bands` of `acquisitions` onto `grid`."""
        acquisitions = list(acquisitions)
        if not acquisitions:
            raise SourceError(
                f"no acquisitions to load from {self.config.collection}; widen the time window or "
                "raise source.max_cloud_cover"
            )
        stored = self._stored_bands(bands)
        cached = [self._ensure_cached(acq, stored, grid) for acq in acquisitions]
        return LocalSource(None, self.sensor, acquisitions=cached).load(
            cached, bands, grid, chunk_size
        )

    def _stored_bands(self, bands: Sequence[str]) -> list[str]:
        """The requested bands this catalog maps, in canonical order (quality layers such as SCL
        and QA_PIXEL may be unmapped: they are left out)."""
        unmapped = [
            b
            for b in dict.fromkeys(bands)
            if b not in self.config.assets and b not in QUALITY_BANDS
        ]
        if unmapped:
            mapped = ", ".join(f"{b}: {k}" for b, k in self.config.assets.items())
            raise ConfigError(
                f"source.assets maps no asset key for band(s) {', '.join(unmapped)} (it maps "
                f"{mapped}); add the asset key of each band in collection {self.config.collection}"
            )
        stored = _band_order([b for b in bands if b in self.config.assets])
        if not stored:
            raise ValueError("load needs at least one band")
        return stored

    def _collection_key(self) -> str:
        # The same collection id can hold different data in two catalogs: the API is in the key.
        # So is the scale and offset the cached numbers were harmonised to: another sensor config
        # must not read them with its own.
        parsed = urlparse(self.config.url)
        target = self._target()
        return (
            f"{self.config.collection}_{parsed.netloc}{parsed.path}"
            f"_scale{target.scale:g}_offset{target.offset:g}"
        )

    def _key(self, day: dt.date, stored: list[str], grid: GeoBox) -> CacheKey:
        return CacheKey(
            self.name, self._collection_key(), grid_id(grid), day.strftime("%Y%m%d"), tuple(stored)
        )

    def _ensure_cached(self, acq: Acquisition, stored: list[str], grid: GeoBox) -> Acquisition:
        """The acquisition as a local file (fetching the grid pieces the cache lacks)."""
        # The solar day the search grouped the items by (the same for every piece of the grid).
        day = solar_day(acq.datetime, _centre_lon(grid))
        signed: list[pystac.Item] | None = None
        files: list[tuple[GeoBox, Path]] = []
        for _, _, tile in split_grid(grid, self.tile_px):
            key = self._key(day, stored, tile)
            path = self.cache.get(key)
            if path is None:
                if signed is None:
                    signed = self._signed_items(acq, stored)
                path = self._fetch(acq, signed, stored, tile, key)
            files.append((tile, path))
        if len(files) == 1:
            file = files[0][1]
        else:
            file = self._mosaic(self._key(day, stored, grid), grid, files)
        return Acquisition(
            id=acq.id,
            datetime=acq.datetime,
            source=self.name,
            assets={band: (str(file), i + 1) for i, band in enumerate(stored)},
            cloud_cover=acq.cloud_cover,
            grid=grid,
        )

    def _signed_items(self, acq: Acquisition, stored: list[str]) -> list[pystac.Item]:
        items = self._items.get(acq.id)
        if items is None:
            raise SourceError(
                f"acquisition {acq.id} is neither in the download cache {self.cache.root} nor "
                f"from a search of this {self.config.collection} source; search before loading"
            )
        for item in items:
            for band in stored:
                key = self.config.assets[band]
                if key not in item.assets:
                    raise MissingBandError(
                        f"STAC item {item.id} ({self.config.collection}) has no asset {key!r} for "
                        f"band {band} (its assets: {', '.join(sorted(item.assets))}); map {band} "
                        "to one of them in source.assets"
                    )
        return [self._sign(item) for item in items]

    def _sign(self, item: pystac.Item) -> pystac.Item:
        if self._signer is None:
            return item
        # A copy: in-place signers (planetary_computer.sign_inplace) must not touch the searched
        # item, whose signature would expire while it is remembered.
        copy = item.clone()
        try:
            result = self._signer(copy)
        except Exception as exc:  # a user hook: any failure is reported with its item
            raise SourceError(
                f"source.signer {self.config.signer} failed on STAC item {item.id}: "
                f"{_redact(str(exc))}"
            ) from exc
        if result is None:
            return copy
        if not isinstance(result, pystac.Item):
            raise ConfigError(
                f"source.signer {self.config.signer} returned {type(result).__name__} for STAC "
                f"item {item.id}; it must return a pystac Item (or None after signing in place)"
            )
        return result

    def _stac_cfg(self) -> dict[str, Any]:
        """Pixel type and no-data for items whose assets do not say (Planetary Computer)."""
        reflectance = "float32" if self.sensor.resolved_scale() == 1.0 else "uint16"
        assets: dict[str, Any] = {"*": {"data_type": reflectance, "nodata": self.sensor.nodata}}
        for band, (dtype, fill) in QUALITY_BANDS.items():
            if band in self.config.assets:
                assets[self.config.assets[band]] = {"data_type": dtype, "nodata": fill}
        # A single-collection config: applies whatever collection id the items carry (or none).
        return {"assets": assets}

    def _gdal_options(self) -> dict[str, Any]:
        seconds = str(max(1, math.ceil(self.config.timeout_s)))
        return {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # COGs have no side-car files
            "GDAL_HTTP_TIMEOUT": seconds,
            "GDAL_HTTP_CONNECTTIMEOUT": seconds,
            "GDAL_HTTP_MAX_RETRY": str(self.config.max_retries),
            "GDAL_HTTP_RETRY_DELAY": str(max(self.retry_backoff_s, 0.1)),
        }

    def _fetch(
        self,
        acq: Acquisition,
        items: list[pystac.Item],
        stored: list[str],
        tile: GeoBox,
        key: CacheKey,
    ) -> Path:
        """Read `stored` bands of `items` onto `tile` and put them into the cache."""
        keys = [self.config.assets[b] for b in stored]
        resampling = {"*": "bilinear"}
        for band in stored:
            if band in QUALITY_BANDS:  # class numbers and bit flags are never blended
                resampling[self.config.assets[band]] = "nearest"
        # odc-stac fuses the items of a group before we see their numbers, so items that store
        # reflectance differently must not share a group: consecutive items (in the time, id
        # order odc-stac fuses in) that store it alike do, and each group is harmonised on its own.
        radiometry = [self._stored_radiometry(item, stored) for item in items]
        run = [0]
        for before, after in zip(radiometry, radiometry[1:], strict=False):
            alike = all(before[b].same_as(after[b]) for b in before)
            run.append(run[-1] if alike else run[-1] + 1)
        groups = [radiometry[run.index(g)] for g in range(run[-1] + 1)]
        try:
            # odc-stac captures this GDAL environment and applies it in its reader threads.
            with rasterio.Env(**self._gdal_options()), _failed_reads() as failed:
                ds = odc.stac.load(
                    items,
                    bands=keys,
                    geobox=tile,
                    groupby=lambda _item, _parsed, idx: run[idx],
                    resampling=resampling,
                    # a class or bit-flag layer's overviews may be averaged (GDAL's COG default
                    # is cubic), inventing flags: read those at full resolution
                    use_overviews=not any(b in QUALITY_BANDS for b in stored),
                    pool=self.config.max_concurrent_requests,
                    stac_cfg=self._stac_cfg(),
                    fail_on_error=True,
                )
        except (*RASTER_ERRORS, OSError) as exc:
            raise RemoteServiceError(self._read_error(acq, items, keys, exc, failed.uris)) from None
        data, nodata = _stack(ds, stored, keys, groups, self._target())
        log.debug("fetched %s %s onto %s", acq.id, ",".join(stored), grid_id(tile))
        return self.cache.put(
            key, data, crs=tile.crs.to_wkt(), transform=tile.transform, nodata=nodata
        )

    def _stored_radiometry(self, item: pystac.Item, stored: list[str]) -> dict[str, Radiometry]:
        known = self._radiometry.get(item.id, {})
        return {b: known.get(b, self._target()) for b in stored if b not in QUALITY_BANDS}

    def _read_error(
        self,
        acq: Acquisition,
        items: list[pystac.Item],
        keys: list[str],
        exc: Exception,
        failed_uris: list[str],
    ) -> str:
        message = " ".join(str(exc).split())
        culprits = []
        for item in items:
            for key in keys:
                href = item.assets[key].href
                if href in failed_uris or href in message:
                    culprits.append(f"asset {key!r} of STAC item {item.id} ({_redact(href)})")
        if not culprits:
            names = ", ".join(it.id for it in items)
            culprits = [f"asset(s) {', '.join(repr(k) for k in keys)} of STAC item(s) {names}"]
        return (
            f"reading {'; '.join(culprits)} failed ({_redact(message)}); this part of acquisition "
            f"{acq.id} was not cached: run again to retry, or raise source.max_retries / "
            "source.timeout_s"
        )

    def _mosaic(self, key: CacheKey, grid: GeoBox, files: list[tuple[GeoBox, Path]]) -> Path:
        """A VRT over the cached pieces of one acquisition (written once, atomically)."""
        target = self.cache.path(key).with_suffix(".vrt")
        if target.is_file():
            return target
        with rasterio.open(files[0][1]) as first:
            dtype, nodata = first.dtypes[0], first.nodata
        pieces = [(tile, os.path.relpath(path, target.parent)) for tile, path in files]
        text = vrt_mosaic(grid, pieces, key.bands, _GDAL_TYPES[dtype], nodata)
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return target


def _fuse_planes(values: Sequence[np.ndarray], nodata: float | None) -> np.ndarray:
    """One (y, x) plane from odc-stac's (y, x) planes, one per group of items: the first valid
    value wins (as within a group). There is more than one group only where items of the day
    store reflectance differently."""
    plane = values[0].copy()
    for other in values[1:]:
        if nodata is None or np.isnan(nodata):
            if not np.issubdtype(plane.dtype, np.floating):
                break  # integers without a no-data value: every value is data
            empty = np.isnan(plane)
        else:
            empty = plane == nodata
        np.copyto(plane, other, where=empty)
    return plane


def _stack(
    ds: xr.Dataset,
    stored: list[str],
    keys: list[str],
    groups: Sequence[Mapping[str, Radiometry]],
    target: Radiometry,
) -> tuple[np.ndarray, float | None]:
    """(band, y, x) array of the stored numbers in one dtype, and its no-data value.

    `groups` says how each time slice of `ds` stores each reflectance band: those are brought to
    `target` before the slices are fused, and keep their type and no-data; quality layers (SCL,
    QA_PIXEL) are stored in the same type, which they fit."""
    if ds.sizes.get("time", 0) != len(groups):
        # each slice must be harmonised with its own items' offset: a mismatch would mix them up
        raise SourceError(
            f"odc-stac returned {ds.sizes.get('time', 0)} time slice(s) for {len(groups)} group(s) "
            "of items of one acquisition; the installed odc-stac groups items otherwise than "
            "this source relies on (one slice per group, in group order)"
        )
    reflectance = [k for b, k in zip(stored, keys, strict=True) if b not in QUALITY_BANDS]
    dtype = np.result_type(*(ds[k].dtype for k in keys))  # a uint16 QA_PIXEL must fit too
    nodata = ds[reflectance[0]].attrs.get("nodata") if reflectance else 0
    if nodata is None and np.issubdtype(dtype, np.floating):
        nodata = float("nan")
    planes = []
    for band, key in zip(stored, keys, strict=True):
        own = ds[key].attrs.get("nodata")
        values = ds[key].values
        if band not in QUALITY_BANDS:
            values = [
                harmonise(v, own, g[band], target) for v, g in zip(values, groups, strict=True)
            ]
        plane = _fuse_planes(values, own)
        if band not in QUALITY_BANDS and own is not None and nodata is not None and own != nodata:
            plane = np.where(plane == own, nodata, plane)
        planes.append(plane.astype(dtype, copy=False))
    return np.stack(planes), (None if nodata is None else float(nodata))
