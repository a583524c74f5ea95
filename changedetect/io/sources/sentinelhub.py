"""Sentinel-2 from Sentinel Hub (sentinel-hub.com or the Copernicus Data Space Ecosystem).

:class:`SentinelHubSource` searches with the Catalog API and fetches pixels with the Process API.
The ``sentinelhub`` package builds the requests (``SentinelHubRequest``, ``SentinelHubCatalog``
and its paging) and decodes the replies, through its public API only; the HTTP calls themselves,
the token included, go through the source's one retry policy (below), which the package's own
retries cannot express: they wait out 429s without bound and Retry-After without cap, do not
retry a truncated or mistyped body, and do not fetch a fresh token on a 401.

* ``search``: one Catalog API search over the grid's WGS84 bounds and the window, filtered on
  ``eo:cloud_cover``; the granules of one UTC day become one :class:`Acquisition` (the Process API
  mosaics them), whose id names the day and its granules. Searches of windows that ended more
  than :data:`SEARCH_CACHE_AFTER_DAYS` days ago are kept as JSON in the cache folder, so re-running
  a past window asks nothing; an empty answer is never kept (the archive may still fill in), and
  a source made with ``refresh`` (``changedetect run --full``) asks the Catalog again whatever the
  cache holds.
* ``load``: the grid is cut into request tiles of at most ``max_tile_px`` a side on the grid's own
  pixels (:func:`request_tiles`); every (day, tile) not yet in the :class:`DownloadCache` is fetched
  as one Process API request (a few at a time, never faster than ``requests_per_second``) and put
  into the cache as soon as it arrives. A tile's cache key names what the service mosaics into it:
  the service URL, the cloud limit and the day's set of granules, so a day is fetched again when a
  better granule for it arrives later. A GDAL VRT per day then stitches the cached tiles back into
  the grid, and :class:`LocalSource` loads those lazily, so the result is the service's pixels,
  exactly, scaled to reflectance.

Every HTTP call (token, Catalog, Process) has a timeout and bounded retries: HTTP 429 and 5xx,
timeouts, broken connections, truncated bodies and replies of the wrong content type are retried
up to ``max_retries`` times with exponential backoff that honours ``Retry-After`` (milliseconds,
as Sentinel Hub sends it, or an HTTP date; capped), with a random part so that workers throttled
together do not come back together; then a :class:`RemoteServiceError` names the request (date,
tile and URL path, never a token). Other 4xx are not retried, with one exception: a 401 is tried
once more with a fresh token (a token can be revoked before it expires); a 401 that persists, a
refusal from the token endpoint and a 403 (the service says why: a used-up quota, a collection the
account may not use) are a :class:`CredentialsError` that says which. Credentials
(``SH_CLIENT_ID`` / ``SH_CLIENT_SECRET`` or Prefect Secret blocks) are looked up only when a
request is needed, so a fully cached run needs none, and they are kept out of logs and error
messages.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

import numpy as np
import requests
import tifffile
import xarray as xr
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError, MissingTokenError, OAuth2Error
from odc.geo.geobox import GeoBox
from requests_oauthlib import OAuth2Session
from sentinelhub import (
    CRS,
    BBox,
    DataCollection,
    DownloadClient,
    DownloadRequest,
    MimeType,
    MosaickingOrder,
    SentinelHubCatalog,
    SentinelHubRequest,
    SentinelHubSession,
    SHConfig,
)
from sentinelhub.constants import RequestType, SHConstants
from sentinelhub.decoding import decode_sentinelhub_err_msg
from sentinelhub.download.models import DownloadResponse
from sentinelhub.evalscript import parse_data_collection_bands
from sentinelhub.exceptions import ImageDecodingError, MissingDataInRequestException

from ...config import SensorConfig, SentinelHubSourceConfig
from ...errors import CredentialsError, MissingBandError, RemoteServiceError, SourceError
from ...grids import wgs84_bounds
from ...models import Acquisition, TimeWindow
from ...types import ANALYSIS_BANDS
from ..atomic import atomic_path
from ..cache import CacheKey, DownloadCache
from .local import LocalSource
from .remote import RateLimiter, grid_id, split_grid, vrt_mosaic

log = logging.getLogger(__name__)

__all__ = [
    "CDSE_TOKEN_URL",
    "SH_TOKEN_URL",
    "RequestTile",
    "SentinelHubSource",
    "build_evalscript",
    "default_token_url",
    "request_tiles",
    "retry_after_seconds",
]

ENV_CLIENT_ID = "SH_CLIENT_ID"
ENV_CLIENT_SECRET = "SH_CLIENT_SECRET"
ENV_BASE_URL = "SH_BASE_URL"
ENV_TOKEN_URL = "SH_TOKEN_URL"

#: OAuth token endpoint of the Copernicus Data Space Ecosystem (base URL sh.dataspace.copernicus.eu).
CDSE_TOKEN_URL = (
    "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
)

#: OAuth token endpoint of sentinel-hub.com: the main deployment's Keycloak realm, which
#: authenticates for every deployment (sentinelhub-py's ``SHConfig.sh_token_url`` default, which
#: replaced the legacy ``<base_url>/oauth/token``).
SH_TOKEN_URL = SHConfig.sh_token_url

#: Searches of windows that ended more than this many days ago are cached: by then the archive
#: holds every granule of the window (late processing and reprocessing settle within days).
SEARCH_CACHE_AFTER_DAYS = 3

#: Bands every request fetches (plus any other band a load asks for), so one cached tile serves
#: every analysis; SCL only where the collection has it.
FETCH_BANDS = (*ANALYSIS_BANDS, "SCL")

#: The Catalog API returns at most this many items a page.
CATALOG_PAGE_LIMIT = 100

_COLLECTIONS = {
    "sentinel-2-l2a": DataCollection.SENTINEL2_L2A,
    "sentinel-2-l1c": DataCollection.SENTINEL2_L1C,
}


# --------------------------------------------------------------------------------------------
# Pure helpers


def default_token_url(base_url: str) -> str:
    """The OAuth token endpoint that belongs to a service root: CDSE's identity service for
    ``sh.dataspace.copernicus.eu``, else the main sentinel-hub.com deployment's
    (:data:`SH_TOKEN_URL`), which serves every deployment, as sentinelhub-py does."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "sh.dataspace.copernicus.eu":
        return CDSE_TOKEN_URL
    return SH_TOKEN_URL


def retry_after_seconds(
    value: str | None, *, milliseconds: bool = True, now: dt.datetime | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, never negative; None when absent or
    unreadable.

    Sentinel Hub's APIs send a number of milliseconds (its rate-limiting docs: "Time until the next
    request is available. In milliseconds"; sentinelhub-py divides by 1000 too). With
    `milliseconds` off a number is seconds, as RFC 9110 has it. An HTTP date is read either way,
    and decimals are accepted."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text) / (1000.0 if milliseconds else 1.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RequestTile:
    """One Process API request footprint: a pixel window of the analysis grid."""

    row: int
    col: int
    grid: GeoBox

    @property
    def id(self) -> str:
        """Names the tile by CRS, pixel origin, size and resolution (stable across runs)."""
        return grid_id(self.grid)


def request_tiles(grid: GeoBox, max_tile_px: int) -> list[RequestTile]:
    """Cut `grid` into request tiles of at most `max_tile_px` pixels a side, row by row.

    The grid's pixel lattice is split directly (not with sentinelhub's BBoxSplitter, whose equal
    parts of the bbox fall between pixels unless the size divides evenly), so every tile edge is a
    grid pixel edge and the tiles stitch back into the grid pixel for pixel."""
    t = grid.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise SourceError(
            f"grid transform {tuple(t)[:6]} is not north-up; the Process API serves north-up "
            "grids only: use an analysis grid without rotation"
        )
    if max_tile_px < 1:
        raise ValueError(f"max_tile_px must be positive, got {max_tile_px}")
    return [RequestTile(row, col, window) for row, col, window in split_grid(grid, max_tile_px)]


def build_evalscript(bands: Sequence[str], sample_type: str) -> str:
    """A V3 evalscript returning `bands` in order as `sample_type` (0 where there is no data).

    UINT16 returns digital numbers (reflectance x 10000, harmonised to one scale across processing
    baselines by the service); FLOAT32 returns reflectance. SCL is always its class number."""
    units = ["DN" if (b == "SCL" or sample_type == "UINT16") else "REFLECTANCE" for b in bands]
    names = ", ".join(f'"{b}"' for b in [*bands, "dataMask"])
    unit_list = ", ".join(f'"{u}"' for u in [*units, "DN"])
    values = ", ".join(f"sample.{b}" for b in bands)
    zeros = ", ".join("0" for _ in bands)
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        "  return {\n"
        f"    input: [{{bands: [{names}], units: [{unit_list}]}}],\n"
        f'    output: {{bands: {len(bands)}, sampleType: "{sample_type}"}}\n'
        "  };\n"
        "}\n"
        "function evaluatePixel(sample) {\n"
        f"  if (sample.dataMask === 0) return [{zeros}];\n"
        f"  return [{values}];\n"
        "}\n"
    )


def _path_of(url: str | None) -> str:
    return urlsplit(url or "").path or "/"


def _utc_day(when: dt.datetime) -> dt.date:
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.date()


def _utc_naive(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


# --------------------------------------------------------------------------------------------
# Secrets stay out of logs


class _RedactSecrets(logging.Filter):
    """Masks client secrets and access tokens in records of the loggers it guards.

    requests-oauthlib logs the whole token request body (client secret included) and the token
    reply at DEBUG level; this filter rewrites those records before any handler sees them."""

    _TOKEN_PATTERNS = (
        re.compile(r"""(['"]access_token['"]\s*:\s*['"])[^'"]+"""),
        re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"),
        re.compile(r"(client_secret=)[^&\s'\"]+"),
    )

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if not secret:
            return
        with self._lock:
            self._secrets |= {secret, quote_plus(secret), quote(secret, safe="")}

    def redact(self, text: str) -> str:
        with self._lock:
            known = sorted(self._secrets, key=len, reverse=True)
        for secret in known:
            text = text.replace(secret, "***")
        for pattern in self._TOKEN_PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's business, not ours
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _RedactSecrets()
for _name in ("requests_oauthlib", "requests_oauthlib.oauth2_session", "oauthlib"):
    logging.getLogger(_name).addFilter(_REDACTOR)


# --------------------------------------------------------------------------------------------
# HTTP: one retry policy for every call (token, Catalog, Process), pacing, a fresh token on 401

T = TypeVar("T")


class _Retry(Exception):
    """A failure worth another try; `retry_after`: the wait the server asked for, in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _RequestFailed(Exception):
    """A request that failed for good (inside the HTTP layer; the source turns it into its errors).
    `message` is the service's own word on it (HTTP 4xx), secrets masked."""

    def __init__(
        self, reason: str, attempts: int, status: int | None = None, message: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.status = status
        self.message = message


class _Unauthorized(Exception):
    """An API refused the access token (HTTP 401); `sent` is the Authorization header it got."""

    def __init__(self, sent: str | None, message: str) -> None:
        super().__init__(message)
        self.sent = sent
        self.message = message


@dataclass(frozen=True)
class _RetryPolicy:
    """How hard to try one HTTP request: the one retry policy of a source, for all its calls."""

    attempts: int
    backoff_s: float
    max_wait_s: float
    timeout_s: float
    sleep: Callable[[float], None]
    jitter: Callable[[], float]
    limiter: RateLimiter

    def wait_s(self, failures: int, retry_after: float | None) -> float:
        """Wait before the next attempt: the server's Retry-After plus up to one `backoff_s`,
        else exponential backoff of which half is drawn ("equal jitter"); capped at max_wait_s.

        The drawn part spreads the workers out: throttled together, they would otherwise all come
        back at the same instant and be throttled together again."""
        draw = min(max(self.jitter(), 0.0), 1.0)
        if retry_after is not None:
            wait = retry_after + self.backoff_s * draw
        else:
            step = min(self.backoff_s * 2 ** (failures - 1), self.max_wait_s)
            wait = step * (0.5 + 0.5 * draw)
        return min(wait, self.max_wait_s)

    def call(self, label: str, once: Callable[[], T]) -> T:
        """`once()` until it returns, at most `attempts` times: a :class:`_Retry` it raises is
        waited out (and logged), anything else ends the call. Raises :class:`_RequestFailed`
        (with the last reason) when the attempts run out."""
        reason = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            try:
                return once()
            except _Retry as retry:
                reason = retry.reason
                if attempt < self.attempts:
                    wait = self.wait_s(attempt, retry.retry_after)
                    log.warning(
                        "%s: %s; retry %d of %d in %.3g s",
                        label,
                        reason,
                        attempt,
                        self.attempts - 1,
                        wait,
                    )
                    self.sleep(wait)
        raise _RequestFailed(reason, self.attempts)


def _tiff_problem(content: bytes) -> str | None:
    """Why `content` is not a complete TIFF, or None. Parses the header and checks that every
    strip or tile lies inside the body (a truncated reply fails here, not in the decoder)."""
    try:
        with tifffile.TiffFile(io.BytesIO(content)) as tif:
            page = tif.pages.first
            end = max(
                (o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)),
                default=0,
            )
    except Exception as exc:  # tifffile raises many types on garbage
        return f"the reply is not a readable TIFF ({type(exc).__name__}, {len(content)} bytes)"
    if end > len(content):
        return f"the reply is truncated ({len(content)} of at least {end} bytes)"
    return None


def _service_message(response: requests.Response) -> str:
    """What the service says went wrong: the ``error.message`` of its JSON error body (the whole
    body as the package decodes it otherwise), on one line, short, secrets masked."""
    text = ""
    try:
        error = json.loads(response.content).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
    except (ValueError, AttributeError):
        pass
    if not text:
        text = decode_sentinelhub_err_msg(response)
    return _REDACTOR.redact(" ".join(text.split())[:300])


def _body_problem(request: DownloadRequest, response: requests.Response) -> str | None:
    """Why a 2xx reply is unusable (wrong content type, truncated or broken body), or None."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if request.data_type is MimeType.TIFF:
        if content_type not in ("image/tiff", "image/tif"):
            return f"the reply is {content_type or 'untyped'}, not image/tiff"
        return _tiff_problem(response.content)
    if request.data_type is MimeType.JSON:
        if "json" not in content_type:
            return f"the reply is {content_type or 'untyped'}, not JSON"
        try:
            json.loads(response.content)
        except ValueError:
            return f"the reply is not complete JSON ({len(response.content)} bytes)"
    return None


def _bearer(token: Mapping[str, Any]) -> str:
    return f"Bearer {token['access_token']}"


def _token_reply_check(response: requests.Response) -> requests.Response:
    """requests-oauthlib reads an error only from a JSON body and ignores the status: raise for a
    5xx (retried) and for a 4xx that carries no OAuth error (a token URL that is not one)."""
    if response.status_code >= 500:
        response.raise_for_status()
    try:
        if "error" in response.json():
            return response
    except ValueError:
        pass
    response.raise_for_status()
    return response


class _Auth:
    """The source's OAuth access token, one for all its threads: fetched on first need (the
    credentials are looked up then), again shortly before it expires, and when an API refuses it
    (a token can be revoked before it expires). Token requests go through the retry policy."""

    #: A token this close to expiry is replaced (sentinelhub-py's margin).
    REFRESH_BEFORE_S = SentinelHubSession.DEFAULT_SECONDS_BEFORE_EXPIRY

    def __init__(
        self,
        credentials: Callable[[], tuple[str, str]],
        token_url: str,
        policy: _RetryPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self.token_url = token_url
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._token: dict[str, Any] | None = None

    def headers(self) -> dict[str, str]:
        """The Authorization header, with a token valid for a while yet."""
        with self._lock:
            token = self._token
            if token is None or token.get("expires_at", math.inf) - self._clock() <= (
                self.REFRESH_BEFORE_S
            ):
                token = self._token = self._fetch()
            return {"Authorization": _bearer(token)}

    def renew(self, refused: str | None) -> None:
        """Replace the token an API refused (`refused`: the Authorization header it was sent),
        unless another thread replaced it already."""
        with self._lock:
            if self._token is None or refused is None or _bearer(self._token) == refused:
                self._token = self._fetch()

    def _fetch(self) -> dict[str, Any]:
        client_id, client_secret = self._credentials()
        url = self.token_url
        try:
            return self._policy.call(
                f"token request to {_path_of(url)}",
                lambda: self._fetch_once(url, client_id, client_secret),
            )
        except _RequestFailed as exc:
            raise RemoteServiceError(
                f"cannot get a Sentinel Hub access token from {url}: {exc.reason} after "
                f"{exc.attempts} attempt(s); check the service status and the token URL, then run "
                "again"
            ) from None

    def _fetch_once(self, url: str, client_id: str, client_secret: str) -> dict[str, Any]:
        """One client-credentials grant; raises :class:`_Retry` for what another try may mend."""
        try:
            with OAuth2Session(client=BackendApplicationClient(client_id=client_id)) as oauth:
                oauth.register_compliance_hook("access_token_response", _token_reply_check)
                return dict(
                    oauth.fetch_token(
                        token_url=url,
                        client_id=client_id,
                        client_secret=client_secret,
                        headers={
                            "Content-Type": "application/x-www-form-urlencoded",
                            **SHConstants.HEADERS,
                        },
                        include_client_id=True,
                        timeout=self._policy.timeout_s,
                    )
                )
        except InsecureTransportError:
            raise CredentialsError(
                f"token URL {url} is not https; OAuth sends the client secret only over https "
                f"(set {ENV_TOKEN_URL} or source.token_url to an https URL)"
            ) from None
        except MissingTokenError:
            raise _Retry("the reply carries no access token") from None
        except OAuth2Error as exc:
            raise CredentialsError(
                f"the token endpoint {url} refused the client credentials ({exc.error}); "
                f"check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (or the Prefect secret blocks) "
                "and that the client belongs to this service"
            ) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (400, 401, 403):
                raise CredentialsError(
                    f"the token endpoint {url} refused the client credentials (HTTP {status}); "
                    f"check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (or the Prefect secret "
                    "blocks) and that the client belongs to this service"
                ) from None
            if status != 429 and status < 500:
                raise CredentialsError(
                    f"the token endpoint {url} answered HTTP {status}; check {ENV_TOKEN_URL} "
                    f"or source.token_url and the client credentials"
                ) from None
            # the identity service is a Keycloak server: standard HTTP, seconds
            header = exc.response.headers.get("Retry-After") if exc.response is not None else None
            raise _Retry(
                f"HTTP {status}", retry_after_seconds(header, milliseconds=False)
            ) from None
        except requests.Timeout:
            raise _Retry(f"no reply within {self._policy.timeout_s:g} s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"the connection broke ({type(exc).__name__})") from None
        except ValueError:
            raise _Retry("the reply is not an OAuth token") from None


class _Http:
    """The source's Catalog and Process API calls: paced, under the retry policy, and tried once
    more with a fresh token when the API refuses the token."""

    def __init__(self, policy: _RetryPolicy, auth: _Auth) -> None:
        self._policy = policy
        self._auth = auth

    def send(self, request: DownloadRequest, label: str) -> requests.Response:
        """The reply to `request` (2xx, body checked); :class:`_RequestFailed` when it fails."""
        try:
            return self._policy.call(label, lambda: self._once(request))
        except _Unauthorized as refused:
            # A token can be revoked before it expires: one fresh token tells that apart from a
            # service that accepts none of this identity service's tokens.
            log.warning(
                "%s: HTTP 401, the access token was refused; trying once more with a fresh one",
                label,
            )
            self._auth.renew(refused.sent)
        try:
            return self._policy.call(label, lambda: self._once(request))
        except _Unauthorized as refused:
            raise _RequestFailed(
                f"HTTP 401: {refused.message or 'unauthorized'}", 1, 401, refused.message
            ) from None

    def _once(self, request: DownloadRequest) -> requests.Response:
        self._policy.limiter.wait()
        auth = self._auth.headers() if request.use_session else {}
        headers = {**SHConstants.HEADERS, **auth, **request.headers}
        try:
            response = requests.request(
                request.request_type.value,
                url=str(request.url),
                json=request.post_values,
                headers=headers,
                timeout=self._policy.timeout_s,
            )
        except requests.Timeout:
            raise _Retry(f"no reply within {self._policy.timeout_s:g} s") from None
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise _Retry(f"the connection broke ({type(exc).__name__})") from None
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise _Retry(f"HTTP {status}", retry_after_seconds(response.headers.get("Retry-After")))
        if status == 401 and request.use_session:
            raise _Unauthorized(auth.get("Authorization"), _service_message(response))
        if status >= 400:
            message = _service_message(response)
            raise _RequestFailed(f"HTTP {status}: {message or response.reason}", 1, status, message)
        problem = _body_problem(request, response)
        if problem is not None:
            raise _Retry(problem)
        return response


class _CatalogClient(DownloadClient):
    """The client :class:`SentinelHubCatalog` pages its search with (its public ``get_json``),
    sending through the source's HTTP calls."""

    def __init__(self, http: _Http, label: str, config: SHConfig) -> None:
        super().__init__(config=config)
        self._http = http
        self._label = label

    def get_json(
        self,
        url: str,
        post_values: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        request_type: RequestType | None = None,
        **kwargs: Any,
    ) -> Any:
        request = DownloadRequest(
            url=url,
            headers={"Content-Type": MimeType.JSON.get_string(), **(headers or {})},
            request_type=request_type
            or (RequestType.GET if post_values is None else RequestType.POST),
            post_values=post_values,
            data_type=MimeType.JSON,
            **kwargs,
        )
        return self._http.send(request, self._label).json()


# --------------------------------------------------------------------------------------------
# The source


@dataclass(frozen=True)
class _TileJob:
    day: dt.date
    tile: RequestTile
    key: CacheKey


class SentinelHubSource:
    """Sentinel-2 L2A/L1C through the Sentinel Hub Catalog and Process APIs, cached on disk.

    `environ` replaces ``os.environ`` for credentials and URL overrides. `backoff_s` is the first
    retry wait (doubled each retry, half of it drawn at random), `max_wait_s` caps every wait,
    Retry-After included, `sleep` does the waiting and `jitter` draws the random part, a number in
    [0, 1] (tests pass small values, a recorder and a constant). With `refresh` every search asks
    the Catalog API, even for a window the search cache holds (and caches the answer anew).
    """

    name = "sentinelhub"

    def __init__(
        self,
        config: SentinelHubSourceConfig,
        sensor: SensorConfig,
        *,
        environ: Mapping[str, str] | None = None,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        refresh: bool = False,
    ) -> None:
        if backoff_s < 0 or max_wait_s < 0:
            raise ValueError("backoff_s and max_wait_s must not be negative")
        self.config = config
        self.sensor = sensor
        self.refresh = refresh
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self.cache = DownloadCache(config.cache_dir)
        self.base_url = (self._env(ENV_BASE_URL) or config.base_url).rstrip("/")
        self.token_url = (
            self._env(ENV_TOKEN_URL) or config.token_url or default_token_url(self.base_url)
        )
        self._policy = _RetryPolicy(
            attempts=config.max_retries + 1,
            backoff_s=backoff_s,
            max_wait_s=max_wait_s,
            timeout_s=config.timeout_s,
            sleep=sleep,
            jitter=jitter,
            limiter=RateLimiter(config.requests_per_second),
        )
        # Credentials are looked up only when a request needs a token: a cached run needs none.
        self._auth = _Auth(self._credentials, self.token_url, self._policy)
        self._http = _Http(self._policy, self._auth)
        #: What the package builds requests with: the service only, never the credentials.
        self._sh_config = SHConfig(
            use_defaults=True,  # never read or write ~/.config/sentinelhub
            sh_base_url=self.base_url,
            sh_token_url=self.token_url,
            download_timeout_seconds=config.timeout_s,
        )
        #: The granules of each acquisition this source's searches found (acquisition id -> ids).
        self._granules: dict[str, tuple[str, ...]] = {}
        self._collection = self._define_collection()
        self._told_offset = False

    # -- configuration -------------------------------------------------------------------------

    def _env(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value.strip() if value and value.strip() else None

    def _define_collection(self) -> DataCollection:
        """The collection bound to this service: the built-in definitions hard-code their host,
        so requests for a CDSE or test deployment would otherwise go to sentinel-hub.com."""
        base = _COLLECTIONS[self.config.collection]
        wanted = base.value.derive(service_url=self.base_url)
        # The package allows one enum per definition: the built-in one for its own host, or one
        # defined earlier in this process (by another source on this service).
        for known in DataCollection.get_available_collections():
            if known.value == wanted:
                return known
        digest = hashlib.sha1(self.base_url.encode()).hexdigest()[:12].upper()
        return base.define_from(f"CHANGEDETECT_{base.name}_{digest}", service_url=self.base_url)

    @property
    def _collection_key(self) -> str:
        """Cache name of what a tile holds: the collection and the pixel type."""
        return f"{self.config.collection}.{self.config.sample_type.lower()}"

    def _credentials(self) -> tuple[str, str]:
        client_id = self._env(ENV_CLIENT_ID)
        client_secret = self._env(ENV_CLIENT_SECRET)
        if client_id is None and self.config.client_id_block:
            client_id = _prefect_secret(self.config.client_id_block, "client_id_block")
        if client_secret is None and self.config.client_secret_block:
            client_secret = _prefect_secret(self.config.client_secret_block, "client_secret_block")
        missing = [
            name
            for name, value in ((ENV_CLIENT_ID, client_id), (ENV_CLIENT_SECRET, client_secret))
            if not value
        ]
        if missing or client_id is None or client_secret is None:
            raise CredentialsError(
                f"Sentinel Hub credentials are missing ({' and '.join(missing)} not set): set "
                f"{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} in the environment to an OAuth client of "
                f"{self.base_url}, or name Prefect Secret blocks in source.client_id_block and "
                "source.client_secret_block"
            )
        _REDACTOR.add(client_secret)
        return client_id, client_secret

    def _service_error(self, what: str, url: str | None, exc: _RequestFailed) -> Exception:
        return _service_error(what, url, exc, self.token_url)

    # -- search --------------------------------------------------------------------------------

    def search(self, grid: GeoBox, window: TimeWindow) -> list[Acquisition]:
        """One acquisition per UTC day with granules over `grid` in `window` whose cloud cover is
        at most ``max_cloud_cover``, oldest first."""
        bounds = wgs84_bounds(grid)
        cache_file = self._search_cache_file(bounds, window)
        cutoff = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=SEARCH_CACHE_AFTER_DAYS)
        cacheable = window.end < cutoff
        if cacheable and not self.refresh and cache_file.is_file():
            try:
                kept = _read_search_cache(cache_file)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable search cache %s (%s)", cache_file, exc)
                kept = []
            acquisitions = [acq for acq, _ in kept]
            self._granules.update((acq.id, granules) for acq, granules in kept)
            # an empty answer was kept by older releases: it may have filled in since, ask again
            if acquisitions:
                log.info(
                    "%s: %d acquisition(s) from the search cache",
                    window.as_list(),
                    len(acquisitions),
                )
                return acquisitions
        features = self._catalog_search(bounds, window)
        try:
            acquisitions = self._group_by_day(features)
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteServiceError(
                f"Catalog API search of {self.config.collection} in {window.as_list()}: a "
                f"feature has no readable properties.datetime / eo:cloud_cover ({exc!r}); check "
                f"that {self.base_url} is a Sentinel Hub service"
            ) from None
        # An empty answer is never kept: granules of a past window can still arrive (late
        # processing, a gap in the archive filled), and a kept "nothing" would hide them for good.
        if cacheable and acquisitions:
            _write_search_cache(cache_file, [(a, self._granules[a.id]) for a in acquisitions])
        log.info(
            "catalog: %d granule(s) on %d day(s) in %s",
            len(features),
            len(acquisitions),
            window.as_list(),
        )
        return acquisitions

    def _catalog_search(
        self, bounds: tuple[float, float, float, float], window: TimeWindow
    ) -> list[dict[str, Any]]:
        what = f"Catalog API search of {self.config.collection} in {window.as_list()}"
        catalog = SentinelHubCatalog(config=self._sh_config)
        # The package builds the search and pages it; the requests go through the source's HTTP
        # calls like the tiles' (its client is a public attribute; its default retries 429s
        # without end).
        catalog.client = _CatalogClient(self._http, what, self._sh_config)
        max_cc = self.config.max_cloud_cover
        try:
            return list(
                catalog.search(
                    self._collection,
                    time=(window.start, window.end),
                    bbox=BBox(bounds, crs=CRS.WGS84),
                    filter=f"eo:cloud_cover <= {max_cc:g}",
                    fields={
                        "include": ["id", "properties.datetime", "properties.eo:cloud_cover"],
                        "exclude": [],
                    },
                    limit=CATALOG_PAGE_LIMIT,
                )
            )
        except _RequestFailed as exc:
            raise self._service_error(what, catalog.service_url + "/search", exc) from None
        except (KeyError, TypeError, MissingDataInRequestException) as exc:
            raise RemoteServiceError(
                f"Catalog API search of {self.config.collection} in {window.as_list()} (POST "
                f"{_path_of(catalog.service_url + '/search')}): unexpected reply (no {exc}); "
                f"check that {self.base_url} is a Sentinel Hub service"
            ) from None

    def _group_by_day(self, features: Sequence[Mapping[str, Any]]) -> list[Acquisition]:
        days: dict[dt.date, list[tuple[dt.datetime, float | None, str]]] = {}
        for feature in features:
            props = feature.get("properties", {})
            when = _utc_naive(
                dt.datetime.fromisoformat(str(props["datetime"]).replace("Z", "+00:00"))
            )
            cloud = props.get("eo:cloud_cover")
            cloud = float(cloud) if cloud is not None else None
            if cloud is not None and cloud > self.config.max_cloud_cover:
                continue  # the filter is the service's; this guards against one that ignores it
            days.setdefault(when.date(), []).append((when, cloud, str(feature.get("id", ""))))
        acquisitions = []
        for day, granules in sorted(days.items()):
            clouds = [c for _, c, _ in granules if c is not None]
            ids = tuple(sorted({g for _, _, g in granules}))
            # The id names the granules too: when the day's set changes (a better granule came
            # in late), it is another acquisition to the run state and to the analysis cache.
            digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:8]
            acquisition = Acquisition(
                id=f"{self.config.collection}_{day:%Y%m%d}_{digest}",
                datetime=min(w for w, _, _ in granules),
                source=self.name,
                cloud_cover=float(np.mean(clouds)) if clouds else None,
            )
            self._granules[acquisition.id] = ids
            acquisitions.append(acquisition)
        return acquisitions

    def _search_cache_file(self, bounds: Sequence[float], window: TimeWindow) -> Path:
        query = {
            "base_url": self.base_url,
            "collection": self.config.collection,
            "bbox": [round(v, 7) for v in bounds],
            "window": window.as_list(),
            "max_cloud_cover": self.config.max_cloud_cover,
        }
        digest = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:20]
        return Path(self.config.cache_dir) / f"{self.name}-search" / f"{digest}.json"

    # -- load ----------------------------------------------------------------------------------

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GeoBox,
        chunk_size: int,
    ) -> xr.Dataset:
        """Fetch what the cache lacks, then lazily load `bands` of `acquisitions` on `grid`."""
        acquisitions = list(acquisitions)
        bands = list(dict.fromkeys(bands))
        if not acquisitions:
            raise SourceError(
                "no acquisitions to load; widen the time window or raise source.max_cloud_cover"
            )
        if not bands:
            raise ValueError("load needs at least one band")
        fetch_bands = self._fetch_bands(bands)
        tiles = request_tiles(grid, self.config.max_tile_px)
        self._sh_crs(grid)  # fail before any request when the CRS cannot be sent
        granules = self._granules_of(acquisitions, grid)
        # what each acquisition is a mosaic of: its day, and the service's granules that day
        mosaic_of = [
            (_utc_day(acq.datetime), self._mosaic_id(ids))
            for acq, ids in zip(acquisitions, granules, strict=True)
        ]
        mosaic_ids = sorted(set(mosaic_of))
        jobs: list[_TileJob] = []
        for day, mosaic in mosaic_ids:
            for tile in tiles:
                key = self._tile_key(tile, day, mosaic, fetch_bands)
                if self.cache.get(key) is None:
                    jobs.append(_TileJob(day, tile, key))
        if jobs:
            log.info(
                "sentinelhub: fetching %d of %d tile(s) (%d day(s) x %d tile(s)); the rest are cached",
                len(jobs),
                len(mosaic_ids) * len(tiles),
                len(mosaic_ids),
                len(tiles),
            )
            self._fetch(jobs, fetch_bands, grid)
        mosaics = {
            (day, mosaic): self._write_mosaic(day, mosaic, tiles, grid, fetch_bands)
            for day, mosaic in mosaic_ids
        }
        local = [
            Acquisition(
                id=acq.id,
                datetime=acq.datetime,
                source=self.name,
                assets={b: (str(mosaics[where]), i + 1) for i, b in enumerate(fetch_bands)},
                cloud_cover=acq.cloud_cover,
                grid=grid,
            )
            for acq, where in zip(acquisitions, mosaic_of, strict=True)
        ]
        return LocalSource(None, self._load_sensor(), acquisitions=local).load(
            local, bands, grid, chunk_size
        )

    def _fetch_bands(self, bands: Sequence[str]) -> list[str]:
        """The bands a request asks for: FETCH_BANDS (as the collection has them) and any other
        band of `bands`, validated against the collection."""
        # L1C has no scene classification: asked for, it is left out like LocalSource leaves out
        # a missing SCL (the analysis then masks no data only).
        has_scl = self.config.collection == "sentinel-2-l2a"
        fetch = [b for b in FETCH_BANDS if b != "SCL" or has_scl]
        fetch += [b for b in bands if b not in fetch and (b != "SCL" or has_scl)]
        try:
            parse_data_collection_bands(self._collection, fetch)
        except ValueError:
            known = [b.name for b in self._collection.bands]
            unknown = [b for b in fetch if b not in known]
            raise MissingBandError(
                f"{self.config.collection} has no band {', '.join(unknown)} (it has "
                f"{', '.join(known)}); drop it from the bands to load"
            ) from None
        return fetch

    def _granules_of(
        self, acquisitions: Sequence[Acquisition], grid: GeoBox
    ) -> list[tuple[str, ...]]:
        """The granules the Process API mosaics for each acquisition: as this source's search
        found them, else (an acquisition made elsewhere) as a search of its days finds them now."""
        unknown = sorted({_utc_day(a.datetime) for a in acquisitions if a.id not in self._granules})
        found: dict[dt.date, tuple[str, ...]] = {}
        if unknown:
            for acq in self.search(grid, TimeWindow(unknown[0], unknown[-1])):
                found[_utc_day(acq.datetime)] = self._granules[acq.id]
        return [self._granules.get(a.id, found.get(_utc_day(a.datetime), ())) for a in acquisitions]

    @property
    def _max_cloud_coverage(self) -> int:
        # whole percent, rounded up so no granule the search kept is left out
        return int(math.ceil(self.config.max_cloud_cover))

    def _mosaic_id(self, granules: Sequence[str]) -> str:
        """Names what one day's Process API request returns: the service, the cloud limit and
        mosaicking order it is sent, and the granules it mosaics. Cached tiles are keyed by it, so
        a tile is fetched anew when any of these changes (a better granule arrives late)."""
        what = {
            "service": self.base_url,
            "max_cloud_coverage": self._max_cloud_coverage,
            "mosaicking": MosaickingOrder.LEAST_CC.value,
            "granules": sorted(granules),
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def _tile_key(
        self, tile: RequestTile, day: dt.date, mosaic: str, bands: Sequence[str]
    ) -> CacheKey:
        return CacheKey(
            self.name, self._collection_key, tile.id, f"{day.isoformat()}_{mosaic}", tuple(bands)
        )

    def _sh_crs(self, grid: GeoBox) -> CRS:
        epsg = grid.crs.epsg
        if epsg is None:
            raise SourceError(
                f"the grid CRS ({grid.crs.proj.name}) has no EPSG code, and the Process API takes "
                "EPSG codes only; set the AOI crs to an EPSG code such as EPSG:32650"
            )
        try:
            return CRS(epsg)
        except ValueError:
            raise SourceError(
                f"the Process API does not support EPSG:{epsg}; use a UTM zone for the AOI crs"
            ) from None

    def _load_sensor(self) -> SensorConfig:
        """The sensor settings the cached tiles need: the service defines their encoding (UINT16:
        reflectance x 10000, FLOAT32: reflectance; harmonised, so no offset; 0 = no data)."""
        scale = 1e-4 if self.config.sample_type == "UINT16" else 1.0
        if self.sensor.resolved_offset() != 0.0 and not self._told_offset:
            self._told_offset = True
            log.warning(
                "sensor offset %g ignored: Sentinel Hub harmonises Sentinel-2 values across "
                "processing baselines, its %s replies need no offset",
                self.sensor.resolved_offset(),
                self.config.sample_type,
            )
        return self.sensor.model_copy(update={"scale": scale, "offset": 0.0, "nodata": 0})

    def _fetch(self, jobs: Sequence[_TileJob], bands: Sequence[str], grid: GeoBox) -> None:
        """Fetch `jobs` a few at a time; the first failure cancels what has not started and is
        raised once the requests in flight are done (their tiles are cached: nothing is lost)."""
        self._auth.headers()  # credentials and a token before any worker starts
        evalscript = build_evalscript(bands, self.config.sample_type)
        crs = self._sh_crs(grid)
        workers = min(self.config.max_concurrent_requests, len(jobs))
        failed = threading.Event()

        def fetch(job: _TileJob) -> Path | None:
            # A worker picks its next job before the main thread can cancel it: check first.
            if failed.is_set():
                return None
            try:
                return self._fetch_tile(job, evalscript, bands, crs)
            except BaseException:
                failed.set()
                raise

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sentinelhub")
        try:
            futures = [pool.submit(fetch, job) for job in jobs]
            for future in as_completed(futures):
                future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_tile(
        self,
        job: _TileJob,
        evalscript: str,
        bands: Sequence[str],
        crs: CRS,
    ) -> Path:
        tile = job.tile.grid
        request = SentinelHubRequest(
            evalscript=evalscript,
            input_data=[
                SentinelHubRequest.input_data(
                    data_collection=self._collection,
                    time_interval=(job.day, job.day),
                    mosaicking_order=MosaickingOrder.LEAST_CC,
                    other_args={
                        "dataFilter": {"maxCloudCoverage": self._max_cloud_coverage},
                        # the service's default, stated because the DN scale depends on it
                        "processing": {"harmonizeValues": True},
                    },
                )
            ],
            responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
            bbox=BBox(tuple(tile.boundingbox), crs=crs),
            size=(tile.width, tile.height),
            config=self._sh_config,
        )
        label = f"Process API request for {job.day} tile {job.tile.id}"
        # The package builds the request and decodes the reply; it is sent through the source's
        # HTTP calls (one retry policy, a fresh token on 401).
        (download,) = request.download_list
        url = download.url
        try:
            response = self._http.send(download, label)
            data = DownloadResponse.from_response(response, download).decode()
        except _RequestFailed as exc:
            raise self._service_error(label, url, exc) from None
        except (ImageDecodingError, tifffile.TiffFileError) as exc:
            raise RemoteServiceError(
                f"{label} (POST {_path_of(url)}): the reply cannot be decoded "
                f"({type(exc).__name__}); run again, and report it if it persists"
            ) from None
        array = np.asarray(data)
        if array.ndim == 2:
            array = array[:, :, np.newaxis]
        expected = (tile.height, tile.width, len(bands))
        dtype = np.dtype(np.uint16 if self.config.sample_type == "UINT16" else np.float32)
        if array.shape != expected or array.dtype != dtype:
            raise RemoteServiceError(
                f"{label} (POST {_path_of(url)}): the reply holds {array.shape} {array.dtype} "
                f"pixels, expected {expected} {dtype}; the service did not run the evalscript as "
                "written"
            )
        stack = np.ascontiguousarray(np.moveaxis(array, 2, 0))
        # Atomic: a run killed here leaves the tiles it finished and no partial file.
        return self.cache.put(
            job.key, stack, crs=tile.crs.to_wkt(), transform=tile.transform, nodata=0
        )

    def _write_mosaic(
        self,
        day: dt.date,
        mosaic: str,
        tiles: Sequence[RequestTile],
        grid: GeoBox,
        bands: Sequence[str],
    ) -> Path:
        """A GDAL VRT stitching the day's cached tiles into `grid` (a few hundred bytes, no pixel
        copied), written atomically beside them."""
        key = CacheKey(
            self.name,
            self._collection_key,
            "mosaic-" + grid_id(grid),
            f"{day.isoformat()}_{mosaic}",
            tuple(bands),
        )
        target = self.cache.path(key).with_suffix(".vrt")
        sources = []
        for tile in tiles:
            path = self.cache.get(self._tile_key(tile, day, mosaic, bands))
            if path is None:
                raise SourceError(
                    f"cached tile {tile.id} of {day} disappeared from {self.cache.root} while "
                    "loading; run again"
                )
            sources.append((tile.grid, os.path.relpath(path, target.parent)))
        dtype = "UInt16" if self.config.sample_type == "UINT16" else "Float32"
        text = vrt_mosaic(grid, sources, bands, dtype, nodata=0)
        if not (target.is_file() and target.read_text(encoding="utf-8") == text):
            with atomic_path(target) as tmp:
                tmp.write_text(text, encoding="utf-8")
        return target


# --------------------------------------------------------------------------------------------
# Module helpers


def _service_error(what: str, url: str | None, exc: _RequestFailed, token_url: str) -> Exception:
    """The error a failed request becomes: CredentialsError for 401/403, else RemoteServiceError."""
    where = f"{what} (POST {_path_of(url)})"
    said = f" ({exc.message})" if exc.message else ""
    if exc.status == 401:
        # The token endpoint accepted the credentials (a refusal there is its own error): the
        # service refuses tokens of this identity service even fresh.
        return CredentialsError(
            f"{where} was refused with HTTP 401{said}, with a freshly issued access token too: "
            f"the service does not accept tokens from {token_url}; check that source.token_url "
            f"(or {ENV_TOKEN_URL}) is the identity service of source.base_url (or {ENV_BASE_URL})"
        )
    if exc.status == 403:
        return CredentialsError(
            f"{where} was refused with HTTP 403: {exc.message or 'forbidden'}; the OAuth client's "
            "account may not do this now (processing units or requests used up, or no access to "
            "the collection): check the account on the Sentinel Hub dashboard"
        )
    if exc.status is not None:
        return RemoteServiceError(f"{where} failed: {exc.reason}; check the request parameters")
    return RemoteServiceError(
        f"{where} failed after {exc.attempts} attempt(s): {exc.reason}; the service is busy or "
        "unreachable: run again later (tiles fetched so far are cached), or lower "
        "source.max_concurrent_requests / source.requests_per_second"
    )


def _prefect_secret(block: str, field_name: str) -> str:
    """The value of a Prefect Secret block (Prefect is imported only here, only when configured)."""
    try:
        from prefect.blocks.system import Secret
    except ImportError:
        raise CredentialsError(
            f"source.{field_name} names the Prefect Secret block {block!r} but Prefect is not "
            f"installed; install prefect, or set {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} instead"
        ) from None
    try:
        value = Secret.load(block).get()
    except Exception as exc:  # Prefect raises many types (missing block, no API server)
        raise CredentialsError(
            f"cannot read the Prefect Secret block {block!r} (source.{field_name}): "
            f"{type(exc).__name__}; check that the block exists and Prefect can reach its API"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise CredentialsError(
            f"the Prefect Secret block {block!r} (source.{field_name}) holds no text value"
        )
    _REDACTOR.add(value.strip())
    return value.strip()


#: Version 2 keeps each acquisition's granules; a version 1 file is searched again.
_SEARCH_CACHE_FORMAT = 2


def _read_search_cache(path: Path) -> list[tuple[Acquisition, tuple[str, ...]]]:
    """The acquisitions kept in `path` with their granules ([] for a file of another format)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("format") != _SEARCH_CACHE_FORMAT:
        return []
    return [
        (
            Acquisition(
                id=str(item["id"]),
                datetime=dt.datetime.fromisoformat(item["datetime"]),
                source=SentinelHubSource.name,
                cloud_cover=item["cloud_cover"],
            ),
            tuple(str(g) for g in item["granules"]),
        )
        for item in payload["acquisitions"]
    ]


def _write_search_cache(
    path: Path, acquisitions: Sequence[tuple[Acquisition, tuple[str, ...]]]
) -> None:
    payload = {
        "format": _SEARCH_CACHE_FORMAT,
        "acquisitions": [
            {
                "id": a.id,
                "datetime": a.datetime.isoformat(),
                "cloud_cover": a.cloud_cover,
                "granules": list(granules),
            }
            for a, granules in acquisitions
        ],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
