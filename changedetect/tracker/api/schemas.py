"""Request and response models of the HTTP API (what the OpenAPI document describes).

Responses are built from the service layer's ``to_dict()`` forms and validated through these
models, so the documented schema is what is actually sent.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..states import CaseState

Role = Literal["analyst", "officer", "viewer"]


#: Free text without NUL: PostgreSQL text cannot hold NUL, so it is refused as input (422)
#: instead of failing in the driver (500). A pattern, so the OpenAPI document says so too.
NO_NUL = r"^[^\x00]*$"
#: ... and with something besides blanks.
NO_NUL_NOT_BLANK = r"^[^\x00]*[^\x00\s][^\x00]*$"
_NUMBER = r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*"
#: ``west,south,east,north``: the form; the ranges and order are checked after parsing.
BBOX_PATTERN = rf"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$"
#: ``YYYY-MM`` (years 1900-2999: the ledger's dates are all in that range).
MONTH_PATTERN = r"^(19|2\d)\d{2}-(0[1-9]|1[0-2])$"

#: What a failed pattern means, for 422 messages people can act on.
PATTERN_MESSAGES = {
    NO_NUL: "must not contain NUL characters",
    NO_NUL_NOT_BLANK: "must not be blank nor contain NUL characters",
    BBOX_PATTERN: "must be west,south,east,north: four numbers in degrees",
    MONTH_PATTERN: "must be a month YYYY-MM, e.g. 2025-06",
}


class ErrorOut(BaseModel):
    """Every error answer: one human-readable line."""

    detail: str = Field(examples=["case 42 is issued and cannot move to closed"])


class ValidationIssue(BaseModel):
    """One problem with the request, located."""

    loc: list[str | int] = Field(examples=[["body", "to"]])
    msg: str = Field(examples=["Input should be 'verifying', 'compliant' or ..."])
    type: str = Field(examples=["literal_error"])


class ValidationErrorOut(BaseModel):
    """A 422 answer: a one-line summary, then each problem located."""

    detail: str = Field(examples=["body.to: Input should be 'issued', 'verifying', ..."])
    errors: list[ValidationIssue]


class Health(BaseModel):
    """Liveness and database reachability."""

    status: Literal["ok", "error"]
    database: Literal["ok", "unreachable"]
    schema_revision: str | None = Field(default=None, examples=["0002"])


class Me(BaseModel):
    """The authenticated user and what its role allows."""

    name: str = Field(examples=["li.wei"])
    role: Role
    county: str | None = Field(
        default=None, description="The only county an officer sees", examples=["Zhouzhi"]
    )
    transitions: dict[str, list[CaseState]] = Field(
        description="For each state, the states this user may move a case to",
        examples=[{"verifying": ["compliant", "false_alarm", "violation"]}],
    )
    can_assign: bool
    counties: list[str] = Field(
        default_factory=list,
        description="Counties the ledger knows (its clues' and assignments'), for reassignment",
        examples=[["Huyi", "Zhouzhi"]],
    )
    photo_max_bytes: int = Field(
        description="Largest field photo the API accepts (bytes)", examples=[10_485_760]
    )


class LoginIn(BaseModel):
    """A token to exchange for a session cookie (the review page's login form)."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200, examples=["cdt_..."])


GEOMETRY_EXAMPLE = {
    "type": "Polygon",
    "coordinates": [
        [[108.25, 34.0], [108.2509, 34.0], [108.2509, 34.0007], [108.25, 34.0007], [108.25, 34.0]]
    ],
}


class FeatureOut(BaseModel):
    """One case as a GeoJSON Feature (flat properties: what QGIS reads best)."""

    type: Literal["Feature"]
    id: int
    geometry: dict[str, Any] = Field(examples=[GEOMETRY_EXAMPLE])
    properties: dict[str, Any] = Field(
        examples=[{"id": 42, "state": "issued", "priority": "high", "tags": "outside_permit"}]
    )


class LinkOut(BaseModel):
    """A link to a related page (OGC API Features style)."""

    rel: str = Field(examples=["next"])
    href: str
    type: str = Field(examples=["application/geo+json"])


class FeatureCollectionOut(BaseModel):
    """RFC 7946 FeatureCollection in WGS84."""

    type: Literal["FeatureCollection"]
    features: list[FeatureOut]
    numberMatched: int = Field(description="Cases matching the filters, on every page")
    numberReturned: int = Field(description="Features in this page")
    links: list[LinkOut] = Field(
        default_factory=list, description="``rel: next`` while more cases follow"
    )


class CaseOut(BaseModel):
    """A case as a list row."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "state": "verifying",
                    "aoi": "qinling-north",
                    "county": "Zhouzhi",
                    "assigned_county": "Zhouzhi",
                    "zone": "Qinling red line core",
                    "zone_tier": "red_line_core",
                    "change_type": "quarry",
                    "confidence": 0.82,
                    "confidence_level": "high",
                    "priority": "high",
                    "escalated": False,
                    "overdue": False,
                    "tags": [],
                    "linked_case_id": None,
                    "link_reason": None,
                    "relapse": False,
                    "site_id": None,
                    "area_m2": 6400.0,
                    "centroid": [108.25045, 34.00036],
                    "first_detected_on": "2025-06-23",
                    "last_detected_on": "2025-07-03",
                    "detections": 2,
                    "deadline": "2025-07-31T12:00:00+00:00",
                    "created_at": "2025-07-01T12:00:00+00:00",
                    "updated_at": "2025-07-04T08:10:00+00:00",
                    "verified_at": None,
                    "closed_at": None,
                    "allowed_transitions": ["compliant", "false_alarm", "violation"],
                }
            ]
        }
    )

    id: int
    state: CaseState
    aoi: str | None
    county: str | None = Field(description="County the clue fell in")
    assigned_county: str | None = Field(description="County responsible for verification")
    zone: str | None
    zone_tier: str | None
    change_type: str
    confidence: float
    confidence_level: str | None
    priority: str
    escalated: bool
    overdue: bool
    tags: list[str]
    linked_case_id: int | None
    link_reason: str | None
    relapse: bool
    site_id: int | None
    area_m2: float
    area_ha: float
    area_mu: float = Field(description="Area in mu (亩, 666.67 m²), the unit of county records")
    centroid: list[float] = Field(description="(lon, lat) WGS84", min_length=2, max_length=2)
    centroid_gcj02: list[float] = Field(
        description="(lon, lat) GCJ-02, the datum of Amap and Tencent maps",
        min_length=2,
        max_length=2,
    )
    centroid_bd09: list[float] = Field(
        description="(lon, lat) BD-09, the datum of Baidu maps", min_length=2, max_length=2
    )
    link_amap: str = Field(description="Opens the centroid in Amap")
    link_baidu: str = Field(description="Opens the centroid in Baidu Maps")
    link_geo: str = Field(description="geo: URI of the centroid (RFC 5870, WGS84), any map app")
    first_detected_on: dt.date
    last_detected_on: dt.date
    detections: int = Field(description="Detections that saw the case (suppressed excluded)")
    deadline: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    verified_at: dt.datetime | None
    closed_at: dt.datetime | None
    allowed_transitions: list[CaseState] = Field(
        description="States the requesting user may move this case to now"
    )


class CasePageOut(BaseModel):
    """One page of cases, most pressing first, with the total number that match."""

    total: int = Field(examples=[137])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    items: list[CaseOut]


class DetectionOut(BaseModel):
    """One night's clue attached to the case."""

    clue_id: str = Field(examples=["qinling-north-20250703-0007"])
    detected_on: dt.date
    area_m2: float
    confidence: float
    change_type: str
    suppressed: bool = Field(description="Only re-saw a case closed as false alarm / compliant")
    ingested_at: dt.datetime
    geometry: dict[str, Any] = Field(examples=[GEOMETRY_EXAMPLE])
    chip_before_url: str | None = Field(
        description="API URL of the before chip", examples=["/cases/42/chips/before?clue_id=..."]
    )
    chip_after_url: str | None = Field(description="API URL of the after chip")
    chip_change_url: str | None = Field(
        default=None,
        description="API URL of the NDVI-change chip (null for clues from runs before it)",
    )


class PositionOut(BaseModel):
    """Where the officer stood when recording the event (WGS84), as the phone reported it."""

    lat: float = Field(examples=[34.00031])
    lon: float = Field(examples=[108.25052])
    accuracy_m: float | None = Field(
        description="Radius of the fix in metres (null when typed in by hand)", examples=[8.0]
    )
    taken_at: dt.datetime = Field(description="When the phone took the fix, by its own clock")
    source: Literal["device", "manual"] = Field(
        description="device: the phone's location service; manual: typed in on site"
    )


class PhotoOut(BaseModel):
    """A field photo of a case; ``url`` serves it to those who may see the case."""

    id: int = Field(examples=[7])
    case_id: int = Field(examples=[42])
    event_id: int | None = Field(description="The verdict event it documents (null until then)")
    sha256: str = Field(
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    )
    media_type: Literal["image/jpeg", "image/png", "image/webp"]
    byte_size: int = Field(examples=[2_481_337])
    width: int = Field(examples=[4032])
    height: int = Field(examples=[3024])
    filename: str | None = Field(description="The phone's file name, for display only")
    uploaded_by: str = Field(examples=["zhou.officer"])
    uploaded_at: dt.datetime
    exif_lat: float | None = Field(description="Where the camera says it was (EXIF GPS)")
    exif_lon: float | None
    exif_taken_at: str | None = Field(
        description="When the camera says it took the photo (EXIF; local time unless an "
        "offset is given)",
        examples=["2025-07-02T10:31:05+08:00"],
    )
    url: str = Field(examples=["/cases/42/photos/7"])


class EventOut(BaseModel):
    """Something that happened to the case (who, when, why); a field verdict also has where
    the officer stood and the photos taken there."""

    id: int | None = Field(default=None, examples=[118])
    at: dt.datetime
    actor: str = Field(examples=["li.wei"])
    kind: str = Field(examples=["transition"])
    from_state: str | None = Field(examples=["issued"])
    to_state: str | None = Field(examples=["verifying"])
    comment: str | None = Field(examples=["field team sent"])
    position: PositionOut | None = None
    photos: list[PhotoOut] = Field(default_factory=list)


class CaseDetailOut(CaseOut):
    """A case with its footprints and its whole history."""

    geometry_first: dict[str, Any] = Field(examples=[GEOMETRY_EXAMPLE])
    geometry_latest: dict[str, Any] = Field(examples=[GEOMETRY_EXAMPLE])
    geometry_union: dict[str, Any] = Field(examples=[GEOMETRY_EXAMPLE])
    detection_history: list[DetectionOut]
    events: list[EventOut]


class TransitionIn(BaseModel):
    """Move a case to another lifecycle state."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"to": "violation", "comment": "quarry face confirmed"}]},
    )
    to: CaseState = Field(description="The new state")
    comment: str | None = Field(
        default=None, max_length=4000, pattern=NO_NUL, description="Why (recorded)"
    )


class AssignIn(BaseModel):
    """Hand a case to another county for verification."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"county": "Huyi", "comment": "site is across the line"}]},
    )
    county: str = Field(min_length=1, max_length=200, pattern=NO_NUL_NOT_BLANK)
    comment: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    expected_county: str | None = Field(
        default=None,
        max_length=200,
        pattern=NO_NUL,
        description=(
            "The county the caller saw the case assigned to (null: unassigned). When given and "
            "the case has been reassigned since, the answer is 409 instead of overwriting that."
        ),
    )


class PositionIn(BaseModel):
    """The officer's position on site, from the phone (or typed in when it gives none)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lat: float = Field(ge=-90, le=90, description="WGS84 latitude, degrees", examples=[34.00031])
    lon: float = Field(
        ge=-180, le=180, description="WGS84 longitude, degrees", examples=[108.25052]
    )
    accuracy_m: float | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Radius of the fix in metres (the Geolocation API's accuracy); null when "
        "typed in",
        examples=[8.0],
    )
    taken_at: dt.datetime = Field(
        description="When the fix was taken, with its UTC offset (the phone's clock, kept as "
        "given)",
        examples=["2025-07-02T02:31:05Z"],
    )
    source: Literal["device", "manual"] = Field(
        default="device", description="device: the phone's location service; manual: typed in"
    )

    @field_validator("taken_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("needs a UTC offset, e.g. 2025-07-02T02:31:05Z")
        return value


class VerificationIn(BaseModel):
    """The field verdict of a case being verified, with what the officer recorded on site."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "verdict": "violation",
                    "note": "quarry face cut since spring; no permit on site",
                    "position": {
                        "lat": 34.00031,
                        "lon": 108.25052,
                        "accuracy_m": 8.0,
                        "taken_at": "2025-07-02T02:31:05Z",
                    },
                    "photo_ids": [7, 8],
                }
            ]
        },
    )
    verdict: Literal["compliant", "false_alarm", "violation"]
    note: str | None = Field(
        default=None, max_length=4000, pattern=NO_NUL, description="What was found (recorded)"
    )
    position: PositionIn
    photo_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        default_factory=list,
        max_length=50,
        description="Photos of this case uploaded before (POST /cases/{id}/photos), not yet "
        "attached to a verdict",
    )


class CountyMonthOut(BaseModel):
    """One county's line of the monthly report: its cases first detected in the month."""

    county: str = Field(examples=["Zhouzhi"])
    issued: int
    verified: int
    verified_on_time: int
    violations: int
    rectified: int
    overdue: int
    relapses: int
    closed: int
    on_time_share: float | None = Field(examples=[0.8])
    median_days_to_verify: float | None = Field(examples=[6.5])
    rank: int | None = Field(description="Timeliness rank across all counties (1 = best)")


class MonthlyReportOut(BaseModel):
    """Per-county figures for one calendar month (UTC)."""

    month: str = Field(examples=["2025-06"])
    start: dt.datetime
    end: dt.datetime
    counties: list[CountyMonthOut]
