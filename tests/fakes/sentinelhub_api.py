"""A fake Sentinel Hub on localhost: OAuth token, Catalog API and Process API, for tests.

The real ``sentinelhub`` client runs against it unchanged; only the services are fake.

* :class:`Truth` holds Sentinel-2 bands as the service stores them (uint16 DN = reflectance x 10000)
  and an SCL band on one projected grid; :func:`oscd_truth` builds it from a real OSCD city
  (EPSG:4326 band files reprojected once onto a UTM 10 m grid) plus a synthetic SCL with a cloud,
  its shadow and a no-data strip along the east edge.
* :class:`Scene` is a granule the catalog lists: time, cloud cover and a DN offset added to the
  reflectance bands, so that every date has its own pixels.
* :class:`FakeSentinelHub` serves, in threads (concurrent requests really overlap):

  - ``POST /auth/realms/main/protocol/openid-connect/token`` (and the legacy ``/oauth/token``):
    the client-credentials grant (id and secret in the form or as HTTP Basic); answers a fresh
    bearer token with ``expires_in``, or 401 ``invalid_client``.
  - ``POST /api/v1/catalog/1.0.0/search``: ``collections``, ``bbox`` (WGS84), ``datetime``
    interval, a CQL2-text ``filter`` of ``eo:cloud_cover`` comparisons joined by ``AND``, and
    ``limit`` / ``next`` paging with a ``context`` object (at most ``page_size`` items a page).
  - ``POST /api/v1/process``: reads the bounds (bbox and CRS), the output size (``width`` /
    ``height`` or ``resx`` / ``resy``), the data filter (``timeRange``, ``maxCloudCoverage``,
    ``mosaickingOrder``), the evalscript's input bands, ``units`` and ``sampleType`` and the
    response format, and answers a real pixel-interleaved GeoTIFF cut from the truth of the scene
    the filter selects (zeros where no scene or no data). The fake cannot run JavaScript: it
    assumes the evalscript returns its input bands in order, ``dataMask`` left out.

  Every request needs a bearer token it issued and did not revoke (else 401, as the service
  words it; :meth:`FakeSentinelHub.revoke_tokens` revokes them in the middle of a run). The fake
  counts requests per endpoint, records them with their arrival time, tracks how many process
  requests were in flight at once, and
  :meth:`FakeSentinelHub.fail_next` makes the next requests fail: an HTTP status (with
  ``Retry-After``), a reply slower than the client's timeout, a truncated TIFF, a connection cut
  mid-body, or an HTML page instead of a TIFF. :meth:`FakeSentinelHub.throttle` rate-limits an
  endpoint like the service: HTTP 429 with ``Retry-After`` in milliseconds, enforced.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer
from pytest_httpserver.httpserver import HTTPServerBase
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import reproject
from werkzeug import Request, Response

from changedetect.grids import utm_crs_for

#: The token endpoint of the main deployment's Keycloak realm, and the legacy one.
TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"
LEGACY_TOKEN_PATH = "/oauth/token"
CATALOG_PATH = "/api/v1/catalog/1.0.0/search"
PROCESS_PATH = "/api/v1/process"
ENDPOINTS = {
    TOKEN_PATH: "token",
    LEGACY_TOKEN_PATH: "token",
    CATALOG_PATH: "catalog",
    PROCESS_PATH: "process",
}

REFLECTANCE_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")

#: Fault kinds :meth:`FakeSentinelHub.fail_next` knows besides HTTP status codes.
FAULT_KINDS = ("slow", "truncate", "cut", "content_type")


# --------------------------------------------------------------------------------------------
# Truth and scenes


@dataclass(frozen=True)
class Truth:
    """What the service "stores": band -> (y, x) array on one grid. Reflectance bands are uint16
    DN (0 = no data), ``SCL`` uint8 (0 = no data)."""

    crs: CRS
    transform: Affine
    bands: Mapping[str, np.ndarray]

    @property
    def grid(self) -> GeoBox:
        return GeoBox(self.bands["SCL"].shape, self.transform, self.crs)

    def dn(self, band: str, scene: Scene) -> np.ndarray:
        """The stored values of `band` on the date of `scene` (its DN offset added where data)."""
        data = self.bands[band]
        if band == "SCL" or scene.dn_offset == 0:
            return data
        shifted = data.astype(np.int64) + scene.dn_offset
        return np.where(data > 0, np.clip(shifted, 1, 65535), 0).astype(np.uint16)

    def window(
        self, band: str, scene: Scene, row: int, col: int, height: int, width: int
    ) -> np.ndarray:
        """Stored values of a pixel window of the truth grid (what a pixel-exact cut must give)."""
        return self.dn(band, scene)[row : row + height, col : col + width]

    def write(self, path: Path) -> Path:
        """The truth as one multi-band GeoTIFF (band descriptions name the bands), for a look."""
        names = [*REFLECTANCE_BANDS, "SCL"]
        grid = self.grid
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": len(names),
            "dtype": "uint16",
            "crs": self.crs.to_wkt(),
            "transform": self.transform,
            "nodata": 0,
            "compress": "deflate",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            for i, name in enumerate(names, start=1):
                dst.write(self.bands[name].astype(np.uint16), i)
                dst.set_band_description(i, name)
        return path


@dataclass(frozen=True)
class Scene:
    """A granule in the catalog: one pass over the whole truth."""

    datetime: dt.datetime
    cloud_cover: float
    dn_offset: int = 0
    id: str = ""
    collection: str = "sentinel-2-l2a"

    @property
    def when(self) -> dt.datetime:
        """The time as an aware UTC datetime."""
        if self.datetime.tzinfo is None:
            return self.datetime.replace(tzinfo=dt.UTC)
        return self.datetime.astimezone(dt.UTC)

    @property
    def item_id(self) -> str:
        return self.id or f"S2_{self.when:%Y%m%dT%H%M%S}_{self.dn_offset}"


def synthetic_scl(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """A plausible scene classification from the reflectance (4 vegetation, 5 bare or built,
    6 water), with a cloud (9, 8 at its rim) and its shadow (3) planted, and 0 where no data."""
    blue, red, nir = (bands[b].astype(np.float32) for b in ("B02", "B04", "B08"))
    ndvi = (nir - red) / np.maximum(nir + red, 1.0)
    scl = np.full(blue.shape, 5, np.uint8)
    scl[ndvi > 0.3] = 4
    scl[(ndvi < 0.0) & (nir < 1200)] = 6
    rows, cols = np.indices(blue.shape)
    cy, cx = blue.shape[0] * 0.3, blue.shape[1] * 0.6
    dist = np.hypot(rows - cy, cols - cx)
    scl[(np.hypot(rows - cy - 25, cols - cx + 20) < 18) & (dist >= 22)] = 3
    scl[dist < 22] = 8
    scl[dist < 16] = 9
    scl[blue == 0] = 0
    return scl


def oscd_truth(
    city_dir: Path, *, width: int = 360, height: int = 300, resolution: float = 10.0
) -> Truth:
    """A `height` x `width` UTM truth at the centre of an OSCD city (date-1 bands, bilinear),
    origin on a multiple of `resolution`, a synthetic SCL, and the easternmost 7 columns set to
    no data (0 in every band), like the edge of a swath."""
    b02 = next((city_dir / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(b02) as ds:
        west, south, east, north = ds.bounds
    lon, lat = (west + east) / 2, (south + north) / 2
    crs = utm_crs_for(lon, lat).proj
    x, y = Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
    left = math.floor((x - width * resolution / 2) / resolution) * resolution
    top = math.floor((y + height * resolution / 2) / resolution) * resolution
    transform = Affine(resolution, 0, left, 0, -resolution, top)
    bands: dict[str, np.ndarray] = {}
    for band in REFLECTANCE_BANDS:
        src_path = next((city_dir / "imgs_1").glob(f"*_{band}.tif"))
        out = np.zeros((height, width), np.uint16)
        with rasterio.open(src_path) as src:
            reproject(
                rasterio.band(src, 1),
                out,
                src_nodata=0,
                dst_transform=transform,
                dst_crs=crs.to_wkt(),
                dst_nodata=0,
                resampling=Resampling.bilinear,
            )
        out[:, -7:] = 0
        bands[band] = out
    no_data = np.zeros((height, width), bool)
    for band in REFLECTANCE_BANDS:
        no_data |= bands[band] == 0
    for band in REFLECTANCE_BANDS:
        bands[band][no_data] = 0
    bands["SCL"] = synthetic_scl(bands)
    return Truth(crs, transform, bands)


# --------------------------------------------------------------------------------------------
# Request parsing helpers


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


_CC_TERM = re.compile(r"^\s*eo:cloud_cover\s*(<=|>=|<|>|=)\s*([0-9.]+)\s*$")
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b,
}


def _cloud_filter(text: str | None) -> list[tuple[str, float]]:
    """``eo:cloud_cover <= 60 AND ...`` -> [(op, value)]; ValueError for anything else."""
    if not text:
        return []
    terms = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
        match = _CC_TERM.match(part)
        if match is None:
            raise ValueError(f"the fake understands only eo:cloud_cover comparisons, not {part!r}")
        terms.append((match.group(1), float(match.group(2))))
    return terms


def _crs_from_url(url: str) -> CRS:
    if url.rstrip("/").endswith("CRS84"):
        return CRS.from_epsg(4326)
    match = re.search(r"EPSG/0/(\d+)$", url)
    if match is None:
        raise ValueError(f"unknown CRS {url!r}")
    return CRS.from_epsg(int(match.group(1)))


@dataclass(frozen=True)
class EvalscriptSpec:
    """What the fake reads from an evalscript."""

    bands: tuple[str, ...]
    units: tuple[str, ...]
    sample_type: str
    output_bands: int


def parse_evalscript(script: str) -> EvalscriptSpec:
    """Input bands, their units, the output sample type and band count of a V3 evalscript."""
    if not script.lstrip().startswith("//VERSION=3"):
        raise ValueError("evalscript must start with //VERSION=3")
    match = re.search(r"bands\s*:\s*\[([^\]]*)\]", script)
    if match is None:
        raise ValueError("evalscript declares no input bands")
    names = tuple(re.findall(r"[\"'](\w+)[\"']", match.group(1)))
    units_match = re.search(r"units\s*:\s*(\[[^\]]*\]|[\"']\w+[\"'])", script)
    if units_match is None:
        units = ("DEFAULT",) * len(names)
    else:
        found = tuple(u.upper() for u in re.findall(r"[\"'](\w+)[\"']", units_match.group(1)))
        units = found * len(names) if len(found) == 1 else found
    if len(units) != len(names):
        raise ValueError(f"{len(units)} units for {len(names)} input bands")
    sample = re.search(r"sampleType\s*:\s*[\"'](\w+)[\"']", script)
    out_bands = re.search(r"output\s*:\s*\[?\s*\{[^}]*?bands\s*:\s*(\d+)", script)
    if out_bands is None:
        raise ValueError("evalscript declares no output band count")
    return EvalscriptSpec(
        names, units, sample.group(1) if sample else "AUTO", int(out_bands.group(1))
    )


# --------------------------------------------------------------------------------------------
# The service


@dataclass
class Recorded:
    """One request the fake received."""

    endpoint: str
    arrived: float
    body: dict[str, Any] | None
    status: int = 0


@dataclass
class _Fault:
    kind: str
    endpoint: str
    skip: int
    remaining: int | None
    retry_after: str | None
    sleep_s: float
    message: str | None = None


@dataclass
class _Throttle:
    retry_after_ms: int
    until: float | None = None


class FakeSentinelHub(HTTPServerBase):
    """Token, Catalog and Process endpoints over a :class:`Truth`; use as a context manager."""

    def __init__(
        self,
        truth: Truth,
        scenes: Sequence[Scene] = (),
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        page_size: int = 100,
        token_lifetime_s: int = 3600,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host, 0, threaded=True)
        self.truth = truth
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.token_lifetime_s = token_lifetime_s
        self._lock = threading.Lock()
        self.scenes: list[Scene] = list(scenes)
        self.process_delay_s = 0.0
        self.reset()

    def __enter__(self) -> FakeSentinelHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_running():
            self.stop()

    # -- test-facing API ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.url_for("/").rstrip("/")

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def reset(self, scenes: Sequence[Scene] | None = None) -> None:
        """Forget requests, faults and tokens (and replace the scenes if given)."""
        with self._lock:
            if scenes is not None:
                self.scenes = list(scenes)
            self.requests: list[Recorded] = []
            self.counts: Counter[str] = Counter()
            self.issued_tokens: list[str] = []
            self.revoked_tokens: set[str] = set()
            self._revoke_after: int | None = None
            self.in_flight = 0
            self.max_in_flight = 0
            self.process_delay_s = 0.0
            self._faults: list[_Fault] = []
            self._throttles: dict[str, _Throttle] = {}
        self.clear_log()

    def revoke_tokens(self, *, after: int = 0) -> None:
        """Revoke every token issued so far once `after` more API (catalog or process) requests
        have arrived, as when an OAuth client's sessions are revoked in the middle of a run: the
        tokens are refused with 401 long before they expire, new ones are issued as usual."""
        with self._lock:
            self._revoke_after = after

    def publish(self, *scenes: Scene) -> None:
        """Add granules to the archive (late processing, a gap filled, a reprocessed granule),
        keeping the requests and tokens so far."""
        with self._lock:
            self.scenes = [*self.scenes, *scenes]

    def count(self, endpoint: str | None = None) -> int:
        """Requests received by `endpoint` (``token``, ``catalog``, ``process``), or by all."""
        with self._lock:
            return sum(self.counts.values()) if endpoint is None else self.counts[endpoint]

    def recorded(self, endpoint: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def fail_next(
        self,
        kind: str | int,
        *,
        count: int | None = 1,
        after: int = 0,
        endpoint: str = "process",
        retry_after: str | None = None,
        sleep_s: float = 1.0,
        message: str | None = None,
    ) -> None:
        """Make `count` requests to `endpoint` (None: all) fail, after `after` more succeed.

        `kind` is an HTTP status (``429``, ``500``, ``503``, ``401``, ``403``, ``400``; 429 and 503
        carry ``Retry-After: retry_after`` when given; the JSON error body says `message`, as the
        service says why, e.g. that a quota is used up) or one of ``slow`` (answer after `sleep_s`),
        ``truncate`` (half the body, with a matching Content-Length), ``cut`` (Content-Length of the
        whole body, half of it sent, connection closed) or ``content_type`` (200 with an HTML page).
        """
        kind = str(kind)
        if not (kind.isdigit() or kind in FAULT_KINDS):
            raise ValueError(f"unknown fault {kind!r}")
        if endpoint not in ENDPOINTS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}")
        with self._lock:
            self._faults.append(_Fault(kind, endpoint, after, count, retry_after, sleep_s, message))

    def throttle(self, retry_after_ms: int, *, endpoint: str = "process") -> None:
        """Rate-limit `endpoint` as Sentinel Hub does: the next request gets HTTP 429 with
        ``Retry-After`` in milliseconds, and so does every request that comes before that time has
        passed (with the time left), so a client that waits too little is throttled again."""
        if endpoint not in ENDPOINTS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}")
        with self._lock:
            self._throttles[endpoint] = _Throttle(retry_after_ms)

    def scene_for(
        self, time_from: dt.datetime, time_to: dt.datetime, max_cc: float | None, order: str
    ) -> Scene | None:
        """The scene the Process API mosaics on top for a data filter."""
        found = [
            s
            for s in self.scenes
            if time_from <= s.when <= time_to and (max_cc is None or s.cloud_cover <= max_cc)
        ]
        if not found:
            return None
        if order == "leastCC":
            return min(found, key=lambda s: (s.cloud_cover, s.when))
        if order == "leastRecent":
            return min(found, key=lambda s: s.when)
        return max(found, key=lambda s: s.when)

    # -- werkzeug entry point ----------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        endpoint = ENDPOINTS.get(request.path, "other")
        body = request.get_json(silent=True) if endpoint != "token" else None
        record = Recorded(endpoint, time.monotonic(), body)
        with self._lock:
            self.requests.append(record)
            self.counts[endpoint] += 1
            if endpoint in ("catalog", "process") and self._revoke_after is not None:
                if self._revoke_after == 0:
                    self.revoked_tokens |= set(self.issued_tokens)
                    self._revoke_after = None
                else:
                    self._revoke_after -= 1
            throttled = self._throttled(endpoint, record.arrived)
            fault = None if throttled is not None else self._take_fault(endpoint)
            if endpoint == "process":
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if throttled is not None:
                response = _error(
                    429,
                    "Too Many Requests",
                    "You have exceeded your rate limit",
                    headers={"Retry-After": str(throttled)},
                    code="RATE_LIMIT_EXCEEDED",
                )
            else:
                response = self._answer(request, endpoint, body, fault)
        finally:
            if endpoint == "process":
                with self._lock:
                    self.in_flight -= 1
        record.status = response.status_code
        return response

    def _throttled(self, endpoint: str, now: float) -> int | None:
        """Milliseconds a request arriving at `now` must still wait, or None (under the lock)."""
        throttle = self._throttles.get(endpoint)
        if throttle is None:
            return None
        if throttle.until is None:
            throttle.until = now + throttle.retry_after_ms / 1000.0
            return throttle.retry_after_ms
        if now < throttle.until:
            return max(1, math.ceil((throttle.until - now) * 1000.0))
        del self._throttles[endpoint]
        return None

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for fault in self._faults:
            if fault.endpoint != endpoint or fault.remaining == 0:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
            return fault
        return None

    def _answer(
        self, request: Request, endpoint: str, body: dict[str, Any] | None, fault: _Fault | None
    ) -> Response:
        if fault is not None and fault.kind.isdigit():
            return self._status_fault(fault)
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.sleep_s)
        if fault is not None and fault.kind == "content_type":
            return Response(
                "<html><body>502 Bad Gateway</body></html>", 200, content_type="text/html"
            )
        if endpoint == "token":
            response = self._token(request)
        elif not self._authorized(request):
            response = _error(
                401,
                "Unauthorized",
                "You are not authorized! Please provide a valid access token to the header "
                "Authorization.",
                code="COMMON_UNAUTHORIZED",
            )
        elif endpoint == "catalog":
            response = self._catalog(body)
        elif endpoint == "process":
            if self.process_delay_s:
                time.sleep(self.process_delay_s)
            response = self._process(body)
        else:
            response = _error(404, "Not Found", f"no endpoint {request.path}")
        if fault is not None and fault.kind in ("truncate", "cut"):
            return _mangled(response, fault.kind)
        return response

    @staticmethod
    def _status_fault(fault: _Fault) -> Response:
        status = int(fault.kind)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        message = fault.message or f"injected HTTP {status}"
        return _error(status, "injected", message, headers=headers)

    # -- token ---------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = (unquote_plus(p) for p in decoded.partition(":"))
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        if client_id != self.client_id or client_secret != self.client_secret:
            return _json(
                {"error": "invalid_client", "error_description": "Invalid client credentials"}, 401
            )
        token = "fake-access-" + secrets.token_hex(12)
        with self._lock:
            self.issued_tokens.append(token)
        return _json(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        )

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("Authorization", "")
        with self._lock:
            token = auth[7:] if auth.startswith("Bearer ") else ""
            return token in self.issued_tokens and token not in self.revoked_tokens

    # -- catalog -------------------------------------------------------------------------------

    def _catalog(self, body: dict[str, Any] | None) -> Response:
        if body is None:
            return _error(400, "Bad Request", "catalog search needs a JSON body")
        try:
            terms = _cloud_filter(body.get("filter"))
        except ValueError as exc:
            return _error(400, "Bad Request", str(exc))
        if body.get("filter") and body.get("filter-lang", "cql2-text") != "cql2-text":
            return _error(400, "Bad Request", "the fake reads cql2-text filters only")
        collections = body.get("collections") or []
        start = end = None
        if body.get("datetime"):
            start_text, _, end_text = body["datetime"].partition("/")
            start, end = _parse_time(start_text), _parse_time(end_text)
        footprint = self._footprint()
        bbox = body.get("bbox")
        if bbox and not (
            bbox[0] <= footprint[2]
            and footprint[0] <= bbox[2]
            and bbox[1] <= footprint[3]
            and footprint[1] <= bbox[3]
        ):
            matches: list[Scene] = []
        else:
            matches = [
                s
                for s in sorted(self.scenes, key=lambda s: (s.when, s.item_id))
                if (not collections or s.collection in collections)
                and (start is None or start <= s.when <= end)  # type: ignore[operator]
                and all(_OPS[op](s.cloud_cover, value) for op, value in terms)
            ]
        limit = int(body.get("limit", 10))
        page = max(1, min(limit, self.page_size))
        offset = int(body.get("next") or 0)
        chunk = matches[offset : offset + page]
        context: dict[str, Any] = {"limit": limit, "returned": len(chunk)}
        if offset + page < len(matches):
            context["next"] = offset + page
        features = [self._feature(s, footprint) for s in chunk]
        return _json(
            {"type": "FeatureCollection", "features": features, "links": [], "context": context},
            content_type="application/geo+json",
        )

    def _footprint(self) -> tuple[float, float, float, float]:
        left, bottom, right, top = self.truth.grid.boundingbox
        tr = Transformer.from_crs(self.truth.crs, 4326, always_xy=True)
        return tr.transform_bounds(left, bottom, right, top, densify_pts=21)

    @staticmethod
    def _feature(scene: Scene, footprint: Sequence[float]) -> dict[str, Any]:
        west, south, east, north = footprint
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": scene.item_id,
            "collection": scene.collection,
            "bbox": list(footprint),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "datetime": scene.when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "eo:cloud_cover": scene.cloud_cover,
            },
            "links": [],
            "assets": {},
        }

    # -- process -------------------------------------------------------------------------------

    def _process(self, body: dict[str, Any] | None) -> Response:
        try:
            return self._render(body or {})
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            return _error(400, "Bad Request", f"{type(exc).__name__}: {exc}")

    def _render(self, body: dict[str, Any]) -> Response:
        bounds = body["input"]["bounds"]
        crs = _crs_from_url(bounds["properties"]["crs"])
        minx, miny, maxx, maxy = (float(v) for v in bounds["bbox"])
        output = body["output"]
        if "width" in output:
            width, height = int(output["width"]), int(output["height"])
        else:
            width = round((maxx - minx) / float(output["resx"]))
            height = round((maxy - miny) / float(output["resy"]))
        if not (0 < width <= 2500 and 0 < height <= 2500):
            raise ValueError(f"output size {width} x {height} is outside 1..2500")
        responses = output["responses"]
        if len(responses) != 1 or responses[0]["format"]["type"] != "image/tiff":
            raise ValueError("the fake answers exactly one image/tiff response")
        data = body["input"]["data"]
        if len(data) != 1:
            raise ValueError("the fake reads one input data collection")
        data_filter = data[0].get("dataFilter", {})
        time_range = data_filter.get("timeRange", {})
        scene = self.scene_for(
            _parse_time(time_range["from"]),
            _parse_time(time_range["to"]),
            data_filter.get("maxCloudCoverage"),
            data_filter.get("mosaickingOrder", "mostRecent"),
        )
        spec = parse_evalscript(body["evalscript"])
        out_names = [b for b in spec.bands if b != "dataMask"]
        if spec.output_bands != len(out_names):
            raise ValueError(
                f"output declares {spec.output_bands} bands for {len(out_names)} inputs"
            )
        transform = Affine((maxx - minx) / width, 0, minx, 0, -(maxy - miny) / height, maxy)
        stack = self._values(out_names, spec, scene, crs, transform, (height, width))
        return Response(_geotiff(stack, crs, transform), 200, content_type="image/tiff")

    def _values(
        self,
        names: Sequence[str],
        spec: EvalscriptSpec,
        scene: Scene | None,
        crs: CRS,
        transform: Affine,
        shape: tuple[int, int],
    ) -> np.ndarray:
        dtype = {"UINT8": np.uint8, "UINT16": np.uint16, "FLOAT32": np.float32}.get(
            spec.sample_type
        )
        if dtype is None:
            raise ValueError(f"the fake does not do sampleType {spec.sample_type}")
        units = dict(zip(spec.bands, spec.units, strict=True))
        out = np.zeros((len(names), *shape), dtype)
        if scene is None:
            return out
        valid = self._cut(self.truth.bands["SCL"], crs, transform, shape) > 0
        for i, name in enumerate(names):
            if name not in self.truth.bands:
                raise ValueError(f"band {name} is not in the fake's truth")
            unit = units[name]
            if name == "SCL" and unit not in ("DN", "DEFAULT"):
                raise ValueError(f"SCL has DN units only, not {unit}")
            values = self._cut(self.truth.dn(name, scene), crs, transform, shape).astype(np.float64)
            if name != "SCL" and unit in ("REFLECTANCE", "DEFAULT"):
                values = values / 10000.0
            if dtype is np.float32:
                out[i] = values.astype(np.float32)
            else:
                top = np.iinfo(dtype).max
                out[i] = np.clip(np.round(values), 0, top).astype(dtype)
            out[i][~valid] = 0
        return out

    def _cut(
        self, data: np.ndarray, crs: CRS, transform: Affine, shape: tuple[int, int]
    ) -> np.ndarray:
        """`data` (on the truth grid) on the requested grid: a slice when the grids share pixels,
        else nearest-neighbour reprojection; 0 outside the truth."""
        t = self.truth.transform
        col = (transform.c - t.c) / t.a
        row = (transform.f - t.f) / t.e
        aligned = (
            crs == self.truth.crs
            and math.isclose(transform.a, t.a)
            and math.isclose(transform.e, t.e)
            and abs(col - round(col)) < 1e-6
            and abs(row - round(row)) < 1e-6
        )
        if aligned:
            out = np.zeros(shape, data.dtype)
            r, c = round(row), round(col)
            r0, c0 = max(r, 0), max(c, 0)
            r1, c1 = min(r + shape[0], data.shape[0]), min(c + shape[1], data.shape[1])
            if r1 > r0 and c1 > c0:
                out[r0 - r : r1 - r, c0 - c : c1 - c] = data[r0:r1, c0:c1]
            return out
        out = np.zeros(shape, data.dtype)
        reproject(
            data,
            out,
            src_transform=t,
            src_crs=self.truth.crs.to_wkt(),
            src_nodata=0,
            dst_transform=transform,
            dst_crs=crs.to_wkt(),
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
        return out


def _json(obj: Any, status: int = 200, content_type: str = "application/json") -> Response:
    return Response(json.dumps(obj), status, content_type=content_type)


def _error(
    status: int,
    reason: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    code: str = "FAKE",
) -> Response:
    payload = {"error": {"status": status, "reason": reason, "message": message, "code": code}}
    return Response(
        json.dumps(payload), status, headers=dict(headers or {}), content_type="application/json"
    )


def _mangled(response: Response, kind: str) -> Response:
    """Half of `response`'s body: with an honest Content-Length (``truncate``), or announcing the
    whole body and closing the connection after half of it (``cut``)."""
    whole = response.get_data()
    half = whole[: len(whole) // 2]
    if kind == "truncate":
        return Response(half, response.status_code, content_type=response.content_type)

    def body() -> Iterator[bytes]:
        yield half

    return Response(
        body(),
        response.status_code,
        content_type=response.content_type,
        headers={"Content-Length": str(len(whole)), "Connection": "close"},
        direct_passthrough=True,
    )


def _geotiff(stack: np.ndarray, crs: CRS, transform: Affine) -> bytes:
    """A pixel-interleaved, uncompressed GeoTIFF of a (band, y, x) array, as the service sends."""
    count, height, width = stack.shape
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=stack.dtype.name,
            crs=crs.to_wkt(),
            transform=transform,
            interleave="pixel",
        ) as dst:
            dst.write(stack)
        return bytes(mem.read())


__all__ = [
    "CATALOG_PATH",
    "PROCESS_PATH",
    "TOKEN_PATH",
    "EvalscriptSpec",
    "FakeSentinelHub",
    "Recorded",
    "Scene",
    "Truth",
    "oscd_truth",
    "parse_evalscript",
    "synthetic_scl",
]
