"""A fake STAC API and real-imagery assets for tests of STAC sources (no network).

* :class:`FakeStacApi` answers what ``pystac_client`` asks of a STAC API: the landing page
  (``conformsTo`` with item search, filter and query, ``search`` and ``data`` links),
  ``GET /collections`` and ``GET /collections/<id>``, and ``GET``/``POST /search`` with the
  collections, bbox, datetime, ``query`` and CQL2-JSON ``filter`` parameters, paged through
  ``next`` links (``page_size`` items a page, whatever ``limit`` the client asks); the items it
  serves link to their collection, as real APIs' do. :meth:`FakeStacApi.item_search_only` turns it
  into an API that implements item search alone (core + item-search conformance, no ``data``
  link, ``/collections`` answering 404), which the STAC API spec allows. It records every
  request and can answer the next requests to a path with an HTTP error (:meth:`FakeStacApi.fail`).
  It runs in a thread of the test process: only JSON goes through it, asset hrefs are local files
  (GDAL reading HTTP assets served from the same process can deadlock).
* :func:`write_city_assets` reprojects one OSCD city's band files (EPSG:4326 uint16) onto a UTM
  10 m grid as COGs, adds a synthetic SCL, and :func:`cut_assets` cuts them into tile-sized pieces,
  like neighbouring MGRS tiles of one day.
* :func:`make_item` builds a STAC item for a set of asset files, with ``proj`` and ``raster``
  metadata as Earth Search publishes it (or without ``raster:bands``, as Planetary Computer does),
  and any further properties (``s2:processing_baseline``, ``earthsearch:boa_offset_applied``).
* :func:`with_boa_offset` stores the same reflectance as Sentinel-2 processing baseline 04.00 and
  later do: every valid number raised by ESA's ``BOA_ADD_OFFSET`` of 1000.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from pytest_httpserver.httpserver import HTTPServerBase
from rasterio.enums import Resampling
from rasterio.warp import reproject
from werkzeug import Request, Response

from changedetect.grids import utm_crs_for

#: Band -> asset key in Earth Search's sentinel-2-l2a (the StacSourceConfig default).
EARTH_SEARCH_KEYS = {
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B08": "nir",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
#: Band -> asset key in Planetary Computer's sentinel-2-l2a.
PC_KEYS = {band: band for band in EARTH_SEARCH_KEYS}

REFLECTANCE_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")

_API = "https://api.stacspec.org/v1.0.0"
#: What an API that implements item search and nothing else conforms to.
ITEM_SEARCH_ONLY = (f"{_API}/core", f"{_API}/item-search")
CONFORMANCE = (
    f"{_API}/core",
    f"{_API}/collections",
    f"{_API}/ogcapi-features",
    f"{_API}/item-search",
    f"{_API}/item-search#filter",
    f"{_API}/item-search#query",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
)


# --------------------------------------------------------------------------------------------
# Assets


def city_grid(city_dir: Path, size: int = 300, resolution: float = 10.0) -> GeoBox:
    """A `size` x `size` UTM grid at the centre of an OSCD city, origin deliberately *not* on a
    multiple of the resolution (3 m off), so a loader that snaps to the resolution shows."""
    b02 = next((city_dir / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(b02) as ds:
        west, south, east, north = ds.bounds
    lon, lat = (west + east) / 2, (south + north) / 2
    crs = utm_crs_for(lon, lat)
    x, y = Transformer.from_crs(4326, crs.proj, always_xy=True).transform(lon, lat)
    half = size * resolution / 2
    left = math.floor((x - half) / resolution) * resolution + 3.0
    top = math.floor((y + half) / resolution) * resolution + 3.0
    return GeoBox((size, size), Affine(resolution, 0, left, 0, -resolution, top), crs)


def synthetic_scl(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """A plausible scene classification from the reflectance: 0 no data, 4 vegetation, 5 bare or
    built, 6 water, 8 cloud (the brightest blue)."""
    blue, red, nir = (bands[b].astype(np.float32) for b in ("B02", "B04", "B08"))
    ndvi = (nir - red) / np.maximum(nir + red, 1.0)
    scl = np.full(blue.shape, 5, np.uint8)
    scl[ndvi > 0.3] = 4
    scl[(ndvi < 0.0) & (nir < 1200)] = 6
    scl[blue > np.percentile(blue, 99.5)] = 8
    scl[blue == 0] = 0
    return scl


def write_cog(path: Path, data: np.ndarray, grid: GeoBox, nodata: float | None = 0) -> Path:
    """One-band COG on `grid`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": data.dtype.name,
        "crs": grid.crs.to_wkt(),
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "deflate",
        "blocksize": 128,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def write_city_assets(city_dir: Path, images: str, grid: GeoBox, out_dir: Path) -> dict[str, Path]:
    """Band -> COG of one OSCD date (``imgs_1`` / ``imgs_2``) reprojected onto `grid`, plus SCL."""
    arrays: dict[str, np.ndarray] = {}
    for band in REFLECTANCE_BANDS:
        src_path = next((city_dir / images).glob(f"*_{band}.tif"))
        out = np.zeros(grid.shape.yx, np.uint16)
        with rasterio.open(src_path) as src:
            reproject(
                rasterio.band(src, 1),
                out,
                src_nodata=0,
                dst_transform=grid.transform,
                dst_crs=grid.crs.to_wkt(),
                dst_nodata=0,
                resampling=Resampling.bilinear,
            )
        arrays[band] = out
    arrays["SCL"] = synthetic_scl(arrays)
    return {band: write_cog(out_dir / f"{band}.tif", data, grid) for band, data in arrays.items()}


def cut_assets(
    files: Mapping[str, Path], grid: GeoBox, window: tuple[int, int, int, int], out_dir: Path
) -> tuple[dict[str, Path], GeoBox]:
    """The (row, col, height, width) `window` of every file, as COGs of their own (a tile)."""
    row, col, height, width = window
    sub = grid[row : row + height, col : col + width]
    out: dict[str, Path] = {}
    for band, path in files.items():
        with rasterio.open(path) as src:
            data = src.read(1, window=((row, row + height), (col, col + width)))
        out[band] = write_cog(out_dir / f"{band}.tif", data, sub)
    return out, sub


def with_boa_offset(
    files: Mapping[str, Path], out_dir: Path, offset_dn: int = 1000
) -> dict[str, Path]:
    """Copies of `files` whose reflectance bands hold the same reflectance the way processing
    baseline 04.00 stores it: DN = 10000 * reflectance + 1000 (no data stays 0; SCL as is)."""
    out: dict[str, Path] = {}
    for band, path in files.items():
        with rasterio.open(path) as src:
            data, grid = src.read(1), GeoBox.from_rio(src)
        if band in REFLECTANCE_BANDS:
            data = np.where(data == 0, 0, data.astype(np.int64) + offset_dn).astype(np.uint16)
        out[band] = write_cog(out_dir / path.name, data, grid)
    return out


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


# --------------------------------------------------------------------------------------------
# Items


def _footprint(grid: GeoBox) -> tuple[list[float], dict[str, Any]]:
    left, bottom, right, top = grid.boundingbox
    tr = Transformer.from_crs(grid.crs.proj, 4326, always_xy=True)
    west, south, east, north = tr.transform_bounds(left, bottom, right, top, densify_pts=21)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return [west, south, east, north], {"type": "Polygon", "coordinates": [ring]}


def make_item(
    item_id: str,
    when: dt.datetime,
    collection: str,
    files: Mapping[str, Path],
    grid: GeoBox,
    *,
    keys: Mapping[str, str] = EARTH_SEARCH_KEYS,
    cloud_cover: float | None = 10.0,
    cloud_cover_property: str = "eo:cloud_cover",
    raster_bands: bool = True,
    offset: float = 0.0,
    properties: Mapping[str, Any] | None = None,
    href: Callable[[Path], str] = str,
) -> dict[str, Any]:
    """A STAC item (dict) whose assets are `files` (band -> path) named by `keys`; reflectance
    assets' ``raster:bands`` say scale 0.0001 and `offset`; `properties` are added as given."""
    bbox, geometry = _footprint(grid)
    epsg = grid.crs.to_epsg()
    assets: dict[str, Any] = {}
    for band, path in files.items():
        asset: dict[str, Any] = {
            "href": href(path),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "proj:shape": [grid.height, grid.width],
            "proj:transform": list(grid.transform)[:6],
        }
        if raster_bands:
            dtype = "uint8" if band == "SCL" else "uint16"
            info: dict[str, Any] = {"data_type": dtype, "nodata": 1 if band == "QA_PIXEL" else 0}
            if band not in ("SCL", "QA_PIXEL"):
                info.update(scale=0.0001, offset=offset)
            asset["raster:bands"] = [info]
        assets[keys[band]] = asset
    props: dict[str, Any] = {
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "proj:epsg": epsg,
        **(properties or {}),
    }
    if cloud_cover is not None:
        props[cloud_cover_property] = cloud_cover
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "id": item_id,
        "collection": collection,
        "bbox": bbox,
        "geometry": geometry,
        "properties": props,
        "assets": assets,
        "links": [],
    }


# --------------------------------------------------------------------------------------------
# The API


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    args: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class _Failure:
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _in_interval(when: dt.datetime, interval: str | None) -> bool:
    if not interval:
        return True
    if "/" not in interval:
        return when == _parse_time(interval)
    start, end = interval.split("/")
    if start not in ("", "..") and when < _parse_time(start):
        return False
    return not (end not in ("", "..") and when > _parse_time(end))


def _bbox_hits(a: Sequence[float] | None, b: Sequence[float]) -> bool:
    if not a:
        return True
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
}


def _cql2(expr: Mapping[str, Any], props: Mapping[str, Any]) -> bool:
    """The basic CQL2-JSON comparisons and ``and`` / ``or`` (enough for property filters)."""
    op = expr["op"]
    if op == "and":
        return all(_cql2(e, props) for e in expr["args"])
    if op == "or":
        return any(_cql2(e, props) for e in expr["args"])
    left, right = expr["args"]
    value = props.get(left["property"])
    return value is not None and _COMPARE[op](value, right)


def _query(query: Mapping[str, Mapping[str, Any]], props: Mapping[str, Any]) -> bool:
    """The STAC query extension: {property: {op: value}}."""
    for prop, tests in query.items():
        value = props.get(prop)
        if value is None or not all(_COMPARE[op](value, ref) for op, ref in tests.items()):
            return False
    return True


class FakeStacApi(HTTPServerBase):
    """A minimal STAC API over in-memory items, in a thread; use as a context manager."""

    def __init__(self, *, page_size: int = 2, host: str = "127.0.0.1") -> None:
        super().__init__(host, 0)
        self.page_size = page_size
        #: What the landing page says the API conforms to (edit to test another API's dialect).
        self.conformance: list[str] = list(CONFORMANCE)
        #: HTTP methods the landing page advertises for /search.
        self.search_methods: list[str] = ["GET", "POST"]
        #: Whether /collections and /collections/<id> exist (see :meth:`item_search_only`).
        self.collections_endpoint = True
        self.collections: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[Recorded] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> FakeStacApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_running():
            self.stop()

    @property
    def url(self) -> str:
        """The API root (what ``pystac_client.Client.open`` takes)."""
        return self.url_for("/")

    def add_collection(self, collection_id: str, items: Sequence[dict[str, Any]]) -> None:
        self.collections[collection_id] = list(items)

    def fail(
        self, path: str, status: int = 500, *, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `times` requests to `path` (e.g. ``/search``) with HTTP `status`."""
        with self._lock:
            self._failures.setdefault(path, []).append(_Failure(status, times, headers or {}))

    def item_search_only(self) -> None:
        """Be an API that implements item search alone: conformance core + item-search, no
        ``data`` link, and ``/collections`` and ``/collections/<id>`` answer 404 (their items
        still name and link their collection)."""
        with self._lock:
            self.conformance = list(ITEM_SEARCH_ONLY)
            self.collections_endpoint = False

    def reset(self) -> None:
        """Forget the recorded requests and pending failures; conformance back to the default."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self.conformance = list(CONFORMANCE)
            self.search_methods = ["GET", "POST"]
            self.collections_endpoint = True

    def count(self, path: str | None = None) -> int:
        """Requests received (to `path`)."""
        return sum(1 for r in self.requests if path is None or r.path == path)

    # -- werkzeug entry point ----------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        body = request.get_json(silent=True) if request.method == "POST" else None
        with self._lock:
            self.requests.append(Recorded(request.method, request.path, dict(request.args), body))
            failure = self._next_failure(request.path)
        if failure is not None:
            return Response(
                json.dumps({"code": "ServerError", "description": f"injected {failure.status}"}),
                failure.status,
                headers=failure.headers,
                content_type="application/json",
            )
        if request.path == "/":
            return self._json(self._landing())
        if request.path.startswith("/collections") and not self.collections_endpoint:
            return self._json({"code": "NotFound", "description": request.path}, 404)
        if request.path == "/collections":
            return self._json(
                {"collections": [self._collection(c) for c in self.collections], "links": []}
            )
        if request.path.startswith("/collections/"):
            cid = request.path.split("/")[2]
            if cid not in self.collections:
                return self._json({"code": "NotFound", "description": f"no {cid}"}, 404)
            return self._json(self._collection(cid))
        if request.path == "/search" and request.method in self.search_methods:
            params = body if body is not None else self._get_params(request)
            return self._json(self._search(params, request.method))
        return self._json({"code": "NotFound", "description": request.path}, 404)

    def _next_failure(self, path: str) -> _Failure | None:
        queue = self._failures.get(path)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    @staticmethod
    def _json(obj: Any, status: int = 200) -> Response:
        ctype = (
            "application/geo+json" if obj.get("type") == "FeatureCollection" else "application/json"
        )
        return Response(json.dumps(obj), status, content_type=ctype)

    @staticmethod
    def _get_params(request: Request) -> dict[str, Any]:
        args = dict(request.args)
        params: dict[str, Any] = {}
        if "collections" in args:
            params["collections"] = args["collections"].split(",")
        if "bbox" in args:
            params["bbox"] = [float(v) for v in args["bbox"].split(",")]
        for key in ("datetime", "token", "limit"):
            if key in args:
                params[key] = args[key]
        for key in ("query", "filter"):
            if key in args:
                params[key] = json.loads(args[key])
        return params

    def _landing(self) -> dict[str, Any]:
        root = self.url
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "fake-stac-api",
            "description": "A fake STAC API for tests",
            "conformsTo": list(self.conformance),
            "links": [
                {"rel": "self", "href": root, "type": "application/json"},
                {"rel": "root", "href": root, "type": "application/json"},
                *(
                    [{"rel": "data", "href": f"{root}collections", "type": "application/json"}]
                    if self.collections_endpoint
                    else []
                ),
                *(
                    {
                        "rel": "search",
                        "href": f"{root}search",
                        "type": "application/geo+json",
                        "method": method,
                    }
                    for method in self.search_methods
                ),
            ],
        }

    def _collection(self, cid: str) -> dict[str, Any]:
        root = self.url
        return {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": cid,
            "description": f"fake collection {cid}",
            "license": "proprietary",
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [[None, None]]},
            },
            "links": [
                {"rel": "self", "href": f"{root}collections/{cid}"},
                {"rel": "root", "href": root},
                {"rel": "items", "href": f"{root}collections/{cid}/items"},
            ],
        }

    def _linked(self, item: dict[str, Any], cid: str) -> dict[str, Any]:
        """`item` as an API serves it: linked to its collection (even where that has no
        endpoint: a client must not need to follow the link). No ``self`` link, since pystac
        would resolve the assets' local-path hrefs against it, and so no ``parent`` link either:
        without a self href pystac reads the parent of every item it parses."""
        root = self.url
        links = [
            {"rel": "collection", "href": f"{root}collections/{cid}", "type": "application/json"},
            {"rel": "root", "href": root, "type": "application/json"},
        ]
        return {**item, "links": links}

    def _search(self, params: Mapping[str, Any], method: str) -> dict[str, Any]:
        wanted = params.get("collections") or list(self.collections)
        bbox = params.get("bbox")
        matches = []
        for cid in wanted:
            for item in self.collections.get(cid, []):
                props = item["properties"]
                if not _bbox_hits(bbox, item["bbox"]):
                    continue
                if not _in_interval(_parse_time(props["datetime"]), params.get("datetime")):
                    continue
                if params.get("query") and not _query(params["query"], props):
                    continue
                if params.get("filter") and not _cql2(params["filter"], props):
                    continue
                matches.append(self._linked(item, cid))
        matches.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))
        start = int(str(params.get("token", "offset:0")).split(":")[1])
        size = min(int(params.get("limit") or self.page_size), self.page_size)
        page = matches[start : start + size]
        root = self.url
        links: list[dict[str, Any]] = [{"rel": "root", "href": root}]
        if start + size < len(matches):
            token = f"offset:{start + size}"
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": f"{root}search",
                        "method": "POST",
                        "body": {"token": token},
                        "merge": True,
                    }
                )
            else:
                query = {k: v for k, v in params.items() if k != "token"}
                encoded = {
                    k: (",".join(map(str, v)) if isinstance(v, list) else v)
                    if not isinstance(v, dict)
                    else json.dumps(v)
                    for k, v in query.items()
                }
                links.append(
                    {
                        "rel": "next",
                        "href": f"{root}search?{urlencode({**encoded, 'token': token})}",
                    }
                )
        return {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(matches),
            "numberReturned": len(page),
        }
