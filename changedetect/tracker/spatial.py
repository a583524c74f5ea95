"""Footprints in the database: PostGIS geometry on PostgreSQL, WKB beside a bounding box on SQLite.

One model serves both engines. In Python a footprint is always WKB bytes (WGS84 lon/lat, as
:func:`.geometry.to_wkb` writes it). Its column is a PostGIS ``geometry(Geometry, 4326)`` on
PostgreSQL, with a GiST index, so the candidates for a spatial match are found by
``ST_Intersects`` in the index and QGIS can open the tables live; on SQLite it is a BLOB, and the
row's bounding-box columns narrow the candidates instead. Either way the exact overlap shares are
then measured in Python (:func:`.geometry.overlap_share`, :func:`.sites.match_sites`), so both
engines decide alike.

Migration 0006 turns the WKB columns into geometry columns on PostgreSQL; PostGIS must be
installed on the server, and enabled in the database (it tries ``CREATE EXTENSION postgis``
itself, which needs a role allowed to, else a DBA runs it first: :func:`ensure_postgis`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geoalchemy2 import Geometry
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Index, LargeBinary, and_, func, literal
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlalchemy.types import TypeDecorator, TypeEngine

from .errors import PostGISUnavailableError
from .geometry import to_wkb

#: WGS84 longitude/latitude: every stored footprint.
SRID = 4326
#: Tables PostGIS itself keeps in the tracker's schema: not the tracker's to compare or empty.
POSTGIS_TABLES = frozenset({"spatial_ref_sys"})
#: The cases as one QGIS layer: a view with a typed MultiPolygon geometry (made by migration 0006).
CASES_MAP_VIEW = "cases_map"
#: ``cases_map.geom``: QGIS wants one geometry type per layer, and unions may be either polygonal.
CASES_MAP_GEOMETRY = "ST_Multi(geom_union)::geometry(MultiPolygon, 4326)"


class _PostGISFootprint(Geometry):
    """``geometry(Geometry, 4326)`` read and written as plain WKB bytes.

    Binary both ways (``ST_GeomFromWKB`` / ``ST_AsBinary``) rather than GeoAlchemy2's default
    EWKT in and EWKB out: nothing is formatted as text, and the bytes read back are those a
    SQLite ledger would hold.
    """

    as_binary = "ST_AsBinary"
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return func.ST_GeomFromWKB(bindvalue, self.srid, type_=self)

    def bind_processor(self, dialect: Dialect) -> None:
        return None  # bytes go to the driver as they are (bytea)

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None  # bytea comes back as bytes, not as a GeoAlchemy2 element


class Footprint(TypeDecorator[bytes]):
    """A WGS84 footprint as WKB bytes: PostGIS geometry on PostgreSQL, a BLOB on SQLite."""

    impl = _PostGISFootprint(geometry_type="GEOMETRY", srid=SRID, spatial_index=False)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # GeoAlchemy2's DDL hooks ask with no dialect: they mean the spatial type
        if dialect is None or dialect.name == "postgresql":
            return self.impl
        return dialect.type_descriptor(LargeBinary())


def postgis_index(name: str, column: str | TextClause) -> Index:
    """A GiST index on a footprint column (or expression), made on PostgreSQL only (by
    migration 0006)."""
    return Index(name, column, postgresql_using="gist", info={"dialects": ("postgresql",)})


def footprint_meets(row: Any, footprint: Any, geom: BaseGeometry, dialect: str) -> ColumnElement:
    """SQL condition: ``row``'s footprint may meet ``geom``.

    PostgreSQL: ``ST_Intersects`` on ``footprint`` (found in its GiST index, and exact).
    SQLite: the row's bounding box (``min_lon`` … ``max_lat``) meets ``geom``'s, which keeps a
    few rows too many; the caller's overlap share, which needs a positive-area intersection,
    drops them, so both engines end with the same matches.
    """
    if dialect == "postgresql":
        return func.ST_Intersects(footprint, func.ST_GeomFromWKB(literal(to_wkb(geom)), SRID))
    minx, miny, maxx, maxy = geom.bounds
    return and_(
        row.max_lon >= minx,
        row.min_lon <= maxx,
        row.max_lat >= miny,
        row.min_lat <= maxy,
    )


def box_meets(
    row: Any, footprint: Any, box: tuple[float, float, float, float], dialect: str
) -> ColumnElement:
    """SQL condition: ``row``'s footprint may meet the box (min_lon, min_lat, max_lon, max_lat).

    PostgreSQL: ``ST_Intersects`` with the box (found in the footprint's GiST index). SQLite:
    the row's bounding-box columns meet it. Either way every footprint meeting something inside
    the box is among them, for callers that judge exactly afterwards (a chunk of ingest asks
    for the envelopes of its clues at once).
    """
    minx, miny, maxx, maxy = box
    if dialect == "postgresql":
        return func.ST_Intersects(footprint, func.ST_MakeEnvelope(minx, miny, maxx, maxy, SRID))
    return and_(
        row.c.max_lon >= minx,
        row.c.min_lon <= maxx,
        row.c.max_lat >= miny,
        row.c.min_lat <= maxy,
    )


def ensure_postgis(connection: Connection) -> None:
    """Enable PostGIS in the connection's database, or say clearly who must and how.

    ``CREATE EXTENSION postgis`` needs a superuser (PostGIS is not a trusted extension), so an
    application role usually cannot run it: a DBA runs it once per database, and the migration
    then finds it there.
    """
    if connection.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").scalar():
        return
    database, role, version = connection.exec_driver_sql(
        "SELECT current_database(), current_user, current_setting('server_version_num')::int / 10000"
    ).one()
    available = connection.exec_driver_sql(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
    ).scalar()
    if not available:
        raise PostGISUnavailableError(
            f"the PostgreSQL {version} server of database {database!r} has no PostGIS installed: "
            f"install it on the server (Debian/Ubuntu: apt-get install postgresql-{version}-"
            "postgis-3), then run `changedetect tracker migrate` again"
        )
    try:
        connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise PostGISUnavailableError(
            f"PostGIS is not enabled in database {database!r} and role {role!r} may not enable "
            f"it: have a database administrator run `CREATE EXTENSION postgis;` in {database!r}, "
            "then run `changedetect tracker migrate` again"
        ) from None


def comparison_filters(dialect: str) -> dict[str, Callable[..., bool]]:
    """Alembic ``include_name`` / ``include_object`` hooks comparing the models with ``dialect``'s
    schema: PostGIS's own tables are not the tracker's, and an index made on one engine only
    (:func:`postgis_index`) is expected only there."""

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        return not (type_ == "table" and name in POSTGIS_TABLES)

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, _: Any) -> bool:
        if type_ == "index" and not reflected:
            return dialect in obj.info.get("dialects", (dialect,))
        return True

    return {"include_name": include_name, "include_object": include_object}
