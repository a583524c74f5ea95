"""One error hierarchy: every message names the input, the problem and what to change."""


class ChangeDetectError(Exception):
    """Base class of every error changedetect raises on purpose."""


class ConfigError(ChangeDetectError):
    """A configuration file or option is malformed or names something invalid."""


class SourceError(ChangeDetectError):
    """An imagery source could not search or load what was asked of it."""


class MissingBandError(SourceError):
    """An acquisition lacks a band the analysis needs."""


class CorruptInputError(SourceError):
    """A raster file exists but cannot be decoded."""


class GridMismatchError(ChangeDetectError):
    """Two rasters that must share a footprint do not overlap or cannot be aligned."""


class NoValidDataError(ChangeDetectError):
    """Nothing usable is left after masking (for example, an all-cloud window)."""


class NoClearViewError(NoValidDataError):
    """Every after-window acquisition is under cloud (or without data) over the whole AOI: the
    night has nothing to compare and is skipped, not failed."""


class SinkError(ChangeDetectError):
    """An output could not be written."""


class CredentialsError(SourceError):
    """A networked source has no credentials, or the service rejected them."""


class RemoteServiceError(SourceError):
    """An imagery service kept failing (HTTP errors, timeouts, broken replies) after its retries."""


class RunFailedError(ChangeDetectError):
    """One or more AOIs of a run failed (the others were published); the message names each."""
