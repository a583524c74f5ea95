"""Tracker errors: every one a :class:`~changedetect.errors.ChangeDetectError`, one line each."""

from __future__ import annotations

from ..errors import ChangeDetectError


class TrackerError(ChangeDetectError):
    """Base class of the errors the case tracker raises on purpose."""


class InvalidTransitionError(TrackerError):
    """A case was asked to move to a state its lifecycle does not allow from where it is."""


class CaseNotFoundError(TrackerError):
    """No case has the id that was asked for."""


class ClueFormatError(TrackerError):
    """A clue Feature (or clues file) lacks a field, or a field has the wrong form."""


class SiteRegistryError(TrackerError):
    """A known-sites registry (permits, restoration sites) cannot be read or is malformed."""


class TrackerDatabaseError(TrackerError):
    """The tracker database cannot be reached, or is not in the shape this version needs."""


class SchemaOutdatedError(TrackerDatabaseError):
    """The database schema is behind (or ahead of) this version's migrations."""


class PostGISUnavailableError(TrackerDatabaseError):
    """A PostgreSQL ledger needs PostGIS, and the server or the database does not have it."""


class ConcurrencyError(TrackerDatabaseError):
    """A write kept conflicting with concurrent writers after all its retries.

    Transient by nature: ``retry_after_s`` is how long a caller had best wait before trying
    again (the API sends it as ``Retry-After``).
    """

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DatabaseBusyError(ConcurrencyError):
    """Another writer (an ingest, a look-back) held the database's write lock for longer than
    this write was allowed to wait."""


class PhotoError(TrackerError):
    """A field photo was refused: not an image the tracker keeps, or too large."""


class UnsupportedPhotoError(PhotoError):
    """The upload's content is not a JPEG, PNG or WebP image that decodes (whatever its name)."""


class PhotoTooLargeError(PhotoError):
    """The upload is larger than the configured ``photo_max_bytes``."""
