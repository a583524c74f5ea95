"""The case ledger's tables, as typed SQLAlchemy 2 declarative models.

Geometries are WKB (WGS84) in Python, next to their bounding box in plain float columns. Their
columns are :class:`~.spatial.Footprint`: PostGIS geometry with a GiST index on PostgreSQL (found
by ``ST_Intersects``), a BLOB on SQLite (found by the box); shapely decides exactly on both.
The schema itself is created only by the Alembic migrations in
``migrations/``; these models must match them (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .spatial import CASES_MAP_GEOMETRY, Footprint, postgis_index
from .states import CASE_STATES, TAGS

UTC = dt.UTC

#: Stable constraint names, so migrations can name what they drop on every engine.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite keeps no zone: store UTC, re-tag)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            # a naive time is ambiguous; refusing it keeps deadlines from drifting by hours
            raise ValueError(f"naive datetime {value.isoformat()} given: use an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the tracker tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), bytes: LargeBinary()}


class BBoxMixin:
    """WGS84 bounding box of the row's geometry: a cheap SQL pre-filter for spatial matching."""

    min_lon: Mapped[float] = mapped_column(Float)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)


_STATE_LIST = ", ".join(f"'{s}'" for s in CASE_STATES)
_TAG_LIST = ", ".join(f"'{t}'" for t in TAGS)


class Case(BBoxMixin, Base):
    """One suspected disturbance followed from issue to verdict (and rectification)."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(f"state IN ({_STATE_LIST})", name="state"),
        CheckConstraint("link_reason IN ('relapse', 'regrowth')", name="link_reason"),
        Index("ix_cases_state_bbox", "state", "min_lon", "max_lon"),
        Index("ix_cases_order", "escalated", "priority_rank", "deadline"),
        # the list order (queries.list_cases), whole and per county, walked without a sort
        Index("ix_cases_queue", "priority_rank", "deadline", "id"),
        Index("ix_cases_county_queue", "assigned_county", "priority_rank", "deadline", "id"),
        Index("ix_cases_state_deadline", "state", "deadline"),  # overdue cases, found directly
        # the escalated ones per county (an officer's list). Not (county, state, deadline): on
        # SQLite 3.40 a query with IN on county and state and a range on deadline answered wrong
        # rows through such an index (tests/tracker/test_queries.py catches it)
        Index(
            "ix_cases_county_escalated",
            "assigned_county",
            "escalated",
            "priority_rank",
            "deadline",
            "id",
        ),
        postgis_index("ix_cases_geom_union", "geom_union"),  # clue matching, the QGIS layer
        postgis_index("ix_cases_geom_latest", "geom_latest"),
        postgis_index("ix_cases_geom_first", "geom_first"),
        # what QGIS filters the cases_map view by, as it pans
        postgis_index("ix_cases_map_geom", text(f"({CASES_MAP_GEOMETRY})")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aoi: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default="issued")
    change_type: Mapped[str] = mapped_column(String(40))
    confidence: Mapped[float] = mapped_column(Float)
    confidence_level: Mapped[str | None] = mapped_column(String(20))
    #: The most urgent priority the pipeline gave any of the case's clues, before site rules.
    clue_priority: Mapped[str] = mapped_column(String(10))
    #: The effective priority, after known-site rules (permitted → low, breach → at least high).
    priority: Mapped[str] = mapped_column(String(10))
    priority_rank: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str | None] = mapped_column(String(200))
    zone_tier: Mapped[str | None] = mapped_column(String(100))
    county: Mapped[str | None] = mapped_column(String(200))
    #: The county responsible for verification (the clue's county unless reassigned).
    assigned_county: Mapped[str | None] = mapped_column(String(200), index=True)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    linked_case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL"), index=True
    )
    link_reason: Mapped[str | None] = mapped_column(String(20))
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("known_sites.id", ondelete="SET NULL"), index=True
    )
    geom_first: Mapped[bytes] = mapped_column(Footprint())
    geom_latest: Mapped[bytes] = mapped_column(Footprint())
    #: Everything any detection of the case covered: the footprint matched against new clues.
    geom_union: Mapped[bytes] = mapped_column(Footprint())
    area_m2: Mapped[float] = mapped_column(Float)
    first_detected_on: Mapped[dt.date] = mapped_column(Date)
    last_detected_on: Mapped[dt.date] = mapped_column(Date, index=True)
    deadline: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    detections: Mapped[list[Detection]] = relationship(
        back_populates="case", order_by="Detection.detected_on, Detection.id"
    )
    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", order_by="CaseEvent.at, CaseEvent.id"
    )
    tags: Mapped[list[CaseTag]] = relationship(
        back_populates="case", cascade="all, delete-orphan", order_by="CaseTag.tag"
    )
    linked_case: Mapped[Case | None] = relationship(remote_side=[id])

    @property
    def tag_names(self) -> list[str]:
        """The case's tags, sorted."""
        return sorted(t.tag for t in self.tags)


class Detection(Base):
    """One night's clue attached to a case (``suppressed`` when it only re-saw a closed one)."""

    __tablename__ = "detections"
    __table_args__ = (postgis_index("ix_detections_geometry", "geometry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    #: Unique across the ledger: the database, not the caller, makes re-ingesting a no-op and
    #: makes two concurrent ingests of one clue collide instead of both inserting it.
    clue_id: Mapped[str] = mapped_column(String(200), unique=True)
    detected_on: Mapped[dt.date] = mapped_column(Date)
    area_m2: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    change_type: Mapped[str] = mapped_column(String(40))
    geometry: Mapped[bytes] = mapped_column(Footprint())
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(Text)
    chip_before: Mapped[str | None] = mapped_column(Text)
    chip_after: Mapped[str | None] = mapped_column(Text)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    ingested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    case: Mapped[Case] = relationship(back_populates="detections")

    @property
    def chip_change(self) -> str | None:
        """The NDVI-change chip's path, kept in the properties (None for a clue without one)."""
        return change_chip_of(self.properties)


#: The properties key of a detection's NDVI-change chip (resolved at ingest, like the columns).
CHIP_CHANGE = "chip_change"


def change_chip_of(properties: Mapping[str, Any] | None) -> str | None:
    """The NDVI-change chip path a detection's properties hold, if any."""
    value = (properties or {}).get(CHIP_CHANGE)
    return value if isinstance(value, str) and value else None


#: Where an officer's position came from: the phone's location service, or typed in by hand
#: (geolocation refused or unavailable on site).
POSITION_SOURCES: tuple[str, ...] = ("device", "manual")
#: What a field photo may be; decided from its decoded content, never from its name or header.
PHOTO_MEDIA_TYPES: tuple[str, ...] = ("image/jpeg", "image/png", "image/webp")


class CaseEvent(Base):
    """Something that happened to a case: creation, a transition, an escalation, a tag change.

    A field verdict (a transition recorded with :func:`~.verification.record_verification`)
    also has a :class:`EventPosition` and the :class:`CasePhoto` s taken on site.
    """

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)

    case: Mapped[Case] = relationship(back_populates="events")
    position: Mapped[EventPosition | None] = relationship(
        back_populates="event", cascade="all, delete-orphan"
    )
    photos: Mapped[list[CasePhoto]] = relationship(back_populates="event", order_by="CasePhoto.id")


class EventPosition(Base):
    """Where the officer stood when recording an event on site (a field verdict).

    The position and its time are the phone's: ``taken_at`` is its clock, kept as given even if
    it runs wrong, and the event's ``at`` is the server's time of receipt, so the file shows
    both. A table of its own rather than columns of ``case_events``: only field verdicts have
    one.
    """

    __tablename__ = "event_positions"
    __table_args__ = (
        CheckConstraint("lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180", name="range"),
        CheckConstraint("accuracy_m IS NULL OR accuracy_m >= 0", name="accuracy"),
        CheckConstraint(
            "source IN ({})".format(", ".join(f"'{s}'" for s in POSITION_SOURCES)), name="source"
        ),
    )

    event_id: Mapped[int] = mapped_column(
        ForeignKey("case_events.id", ondelete="CASCADE"), primary_key=True
    )
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    #: The radius (m) the phone claims for its fix; None for a position typed in.
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    taken_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(10))

    event: Mapped[CaseEvent] = relationship(back_populates="position")


class CasePhoto(Base):
    """A photo taken on site for a case: uploaded first, then attached to the verdict's event.

    The bytes live in the photo store under their SHA-256 (one file for any number of uploads of
    the same bytes); this row says whose case they document, who sent them and what they are.
    """

    __tablename__ = "case_photos"
    __table_args__ = (
        # a phone that retries an upload gets the photo it already sent, not a second one
        UniqueConstraint("case_id", "sha256", name="uq_case_photos_case_sha256"),
        CheckConstraint(
            "media_type IN ({})".format(", ".join(f"'{t}'" for t in PHOTO_MEDIA_TYPES)),
            name="media_type",
        ),
        CheckConstraint("byte_size > 0 AND width > 0 AND height > 0", name="size"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    #: The verdict event the photo documents; None until the verdict is recorded.
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("case_events.id", ondelete="SET NULL"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(20))
    byte_size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    #: The name the phone gave the file, cleaned for display; never used as a path.
    filename: Mapped[str | None] = mapped_column(String(200))
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: Where and when the camera says it took the photo (EXIF), if it says so.
    exif_lat: Mapped[float | None] = mapped_column(Float)
    exif_lon: Mapped[float | None] = mapped_column(Float)
    #: EXIF keeps the camera's local time, with a UTC offset only on some cameras: kept as
    #: ISO 8601 text (``2025-07-02T10:31:05`` or ``...+08:00``) rather than guessed into UTC.
    exif_taken_at: Mapped[str | None] = mapped_column(String(40))

    event: Mapped[CaseEvent | None] = relationship(back_populates="photos")


class CaseTag(Base):
    """A known-site tag of a case, with the site that caused it."""

    __tablename__ = "case_tags"
    __table_args__ = (CheckConstraint(f"tag IN ({_TAG_LIST})", name="tag"),)

    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(30), primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("known_sites.id", ondelete="SET NULL"))
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    case: Mapped[Case] = relationship(back_populates="tags")


class KnownSite(BBoxMixin, Base):
    """A registered permit (mine, quarry) or a site under ecological restoration."""

    __tablename__ = "known_sites"
    __table_args__ = (
        UniqueConstraint("kind", "name", name="uq_known_sites_kind_name"),
        CheckConstraint("kind IN ('permit', 'restoration')", name="kind"),
        postgis_index("ix_known_sites_geometry", "geometry"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    valid_from: Mapped[dt.date | None] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    geometry: Mapped[bytes] = mapped_column(Footprint())
    area_m2: Mapped[float] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    def valid_on(self, day: dt.date) -> bool:
        """Whether the registration covers ``day`` (open ends are unbounded)."""
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )


class SiteObservation(Base):
    """What one night's look-back measured on a footprint (a closed case or a restoration site)."""

    __tablename__ = "site_observations"
    __table_args__ = (
        UniqueConstraint("target", "observed_on", name="uq_site_observations_target_day"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``case:<id>`` or ``site:<id>``.
    target: Mapped[str] = mapped_column(String(40), index=True)
    observed_on: Mapped[dt.date] = mapped_column(Date)
    bare_fraction: Mapped[float] = mapped_column(Float)
    built_fraction: Mapped[float] = mapped_column(Float)
    ndvi_change: Mapped[float | None] = mapped_column(Float)
    disturbed: Mapped[float] = mapped_column(Float)
    relapse_case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
