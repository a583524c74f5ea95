"""PostgreSQL: footprints become PostGIS geometry with GiST indexes, and the cases a QGIS view.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

On PostgreSQL the WKB columns of the cases (union, latest and first footprints), the detections
and the known sites become ``geometry(Geometry, 4326)``, converted in place from the WKB they hold,
each with a GiST index; ``cases_map`` shows the cases to QGIS as one MultiPolygon layer (with a
GiST index on its geometry expression, so panning a million cases reads only what is in view).

PostGIS is enabled here if the migrating role may (``CREATE EXTENSION postgis`` needs a superuser
on most servers); otherwise a DBA runs ``CREATE EXTENSION postgis;`` in the database first. The
downgrade turns the columns back into the same WKB and leaves the extension installed: other
databases objects may use it, and dropping it needs the DBA again.

SQLite: nothing changes (WKB and the bounding-box columns, no SpatiaLite).
"""

from __future__ import annotations

from alembic import op

from changedetect.tracker.spatial import ensure_postgis

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

#: table → its footprint columns (each gets the GiST index ``ix_<table>_<column>``)
FOOTPRINTS = {
    "cases": ("geom_union", "geom_latest", "geom_first"),
    "detections": ("geometry",),
    "known_sites": ("geometry",),
}
MAP_GEOMETRY = "(ST_Multi(geom_union)::geometry(MultiPolygon, 4326))"


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    """Enable PostGIS, convert the footprints, index them, create ``cases_map``."""
    if not _postgresql():
        return
    ensure_postgis(op.get_bind())
    for table, columns in FOOTPRINTS.items():
        # one ALTER per table: a big table is rewritten once, not once per column
        op.execute(
            f"ALTER TABLE {table} "
            + ", ".join(
                f"ALTER COLUMN {c} TYPE geometry(Geometry, 4326) USING ST_GeomFromWKB({c}, 4326)"
                for c in columns
            )
        )
        for column in columns:
            op.create_index(f"ix_{table}_{column}", table, [column], postgresql_using="gist")
    op.execute(f"CREATE INDEX ix_cases_map_geom ON cases USING gist ({MAP_GEOMETRY})")
    op.execute(
        "CREATE VIEW cases_map AS SELECT id, state, priority, priority_rank, escalated, "
        "change_type, confidence, confidence_level, aoi, zone, zone_tier, county, "
        "assigned_county, linked_case_id, link_reason, site_id, area_m2, first_detected_on, "
        f"last_detected_on, deadline, created_at, updated_at, closed_at, {MAP_GEOMETRY} AS geom "
        "FROM cases"
    )
    op.execute(
        "COMMENT ON VIEW cases_map IS 'The cases for QGIS: one row per case, its union "
        "footprint as geom (MultiPolygon, EPSG:4326); key column id'"
    )


def downgrade() -> None:
    """Drop ``cases_map`` and the indexes; the footprints go back to WKB (PostGIS stays)."""
    if not _postgresql():
        return
    op.execute("DROP VIEW IF EXISTS cases_map")
    op.execute("DROP INDEX IF EXISTS ix_cases_map_geom")
    for table, columns in FOOTPRINTS.items():
        for column in columns:
            op.drop_index(f"ix_{table}_{column}", table_name=table)
        # little-endian, as shapely writes it on the machines the tracker runs on
        op.execute(
            f"ALTER TABLE {table} "
            + ", ".join(
                f"ALTER COLUMN {c} TYPE bytea USING ST_AsBinary({c}, 'NDR')" for c in columns
            )
        )
