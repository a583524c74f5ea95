"""An online tile basemap for the review page's map, when a deployment configures one.

By default the map has no basemap: the case outlines on a blank ground, and the page requests
nothing from outside the app. A :class:`Basemap` names one tile server; the page then loads tiles
from that origin, and only from it (its Content Security Policy allows images from that one
origin besides the app's own).

The tiles must be in WGS84 coordinates on Web Mercator (OpenStreetMap, Tianditu's ``_w`` layers
and most WMTS servers). Amap and Baidu tiles are offset to GCJ-02 or BD-09: case outlines would
land hundreds of metres away from the ground they describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ...errors import ConfigError

#: Placeholders Leaflet fills in a tile URL that every basemap needs.
REQUIRED_PLACEHOLDERS = ("{z}", "{x}", "{y}")


@dataclass(frozen=True)
class Basemap:
    """A tile server: its URL template (Leaflet's ``{z}/{x}/{y}``) and the attribution its
    licence asks for (shown on the map as plain text)."""

    url: str
    attribution: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(
                f"basemap URL {self.redacted()!r} must be an http(s) URL of a tile server, "
                "e.g. https://tiles.example.org/{z}/{x}/{y}.png"
            )
        if parts.username is not None or parts.password is not None:
            # every browser that opens the page would get them
            raise ConfigError("the basemap URL must not carry a user name or password")
        if "{" in parts.netloc:
            raise ConfigError(
                f"basemap URL {self.redacted()!r}: name one host, not a {{s}} subdomain pattern "
                "(the page may load images from that one origin only)"
            )
        missing = [p for p in REQUIRED_PLACEHOLDERS if p not in self.url]
        if missing:
            raise ConfigError(
                f"basemap URL {self.redacted()!r} lacks {', '.join(missing)}: "
                "the tile server's URL template has {z}, {x} and {y}"
            )

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: what the page's CSP allows images from."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal keeps its brackets
            host = f"[{host}]"
        default = {"https": 443, "http": 80}[parts.scheme]
        port = f":{parts.port}" if parts.port not in (None, default) else ""
        return f"{parts.scheme}://{host}{port}"

    def redacted(self) -> str:
        """The URL without its query, where tile services put their keys (Tianditu's ``tk``):
        what messages and logs may show."""
        parts = urlsplit(self.url)
        return parts._replace(query="", fragment="").geturl() + ("?…" if parts.query else "")
