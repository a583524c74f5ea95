"""Field photos on disk: a content-addressed store, the content check, EXIF, dossier copies.

A photo is kept under its SHA-256 (``<root>/ab/abcdef…``), so the same bytes uploaded twice,
to one case or to several, are one file, and no name a client chose ever becomes a path. The
files have no extension: a route that serves images by their suffix (the chips') never serves
one even if the store were put under its folder. Bytes arrive in a temporary file inside the store, are hashed and counted as
they come (the size limit stops a large upload at the first byte past it), are decoded with
Pillow, and only then renamed into place: a file in the store is always a whole, checked
image. The store must be outside every folder the app serves files from (checked by the app).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import PhotoTooLargeError, UnsupportedPhotoError

#: Pillow format → media type: what the tracker keeps. Decided from the decoded bytes only.
PHOTO_FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
#: Extension of each media type, for the names photos are served under.
EXTENSIONS: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
#: Larger images are refused before decoding: a 10 MB PNG of one colour can claim billions of
#: pixels. 64 MP holds every phone camera's default resolution with room to spare.
MAX_PHOTO_PIXELS = 64_000_000
#: The dossier embeds photos at most this wide or high, and re-encodes larger files: an A4
#: page shows no more, and the file stays small enough to attach to a message.
DOSSIER_MAX_SIDE = 1600
DOSSIER_MAX_BYTES = 700_000
#: Longest display name kept from the phone's file name.
MAX_FILENAME = 200


@dataclass(frozen=True)
class PhotoFacts:
    """What the decoded content says about a photo."""

    media_type: str
    width: int
    height: int
    exif_lat: float | None = None
    exif_lon: float | None = None
    exif_taken_at: str | None = None


@dataclass(frozen=True)
class StoredPhoto:
    """A photo now in the store: its address, size and facts."""

    sha256: str
    byte_size: int
    facts: PhotoFacts


def display_name(raw: str | None) -> str | None:
    """The phone's file name, fit to show a person: last path part only, no control or
    direction-override characters (which could make ``gpj.exe`` read as ``exe.jpg``), trimmed.
    Never used to build a path or a header."""
    if not raw:
        return None
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:MAX_FILENAME] or None


def _rational(value: Any) -> float:
    return float(value)


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    """EXIF degrees/minutes/seconds and a hemisphere letter → signed decimal degrees."""
    if not dms or len(dms) != 3:
        return None
    degrees = _rational(dms[0]) + _rational(dms[1]) / 60 + _rational(dms[2]) / 3600
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    if str(ref or "").strip().upper() == negative:
        degrees = -degrees
    return degrees if math.isfinite(degrees) else None


def _exif_time(value: Any, offset: Any) -> str | None:
    """EXIF ``YYYY:MM:DD HH:MM:SS`` (+ optional ``±HH:MM``) → ISO 8601, or None if malformed."""
    if not isinstance(value, str):
        return None
    try:
        taken = dt.datetime.strptime(value.strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    text = taken.isoformat()
    if isinstance(offset, str):
        try:
            zone = dt.datetime.strptime(offset.strip().rstrip("\x00"), "%z").tzinfo
        except ValueError:
            zone = None
        if zone is not None:
            text = taken.replace(tzinfo=zone).isoformat()
    return text


def read_exif(image: Image.Image) -> tuple[float | None, float | None, str | None]:
    """Where and when the camera says it took the photo: (lat, lon, ISO time), each None when
    absent or malformed. A photo is never refused for its EXIF: phones strip or mangle it."""
    try:
        exif = image.getexif()
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "S")
        lon = _degrees(
            gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), "W"
        )
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            lat = lon = None
        details = exif.get_ifd(ExifTags.IFD.Exif)
        taken = _exif_time(
            details.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime),
            details.get(ExifTags.Base.OffsetTimeOriginal),
        )
    except Exception:  # any EXIF Pillow cannot make sense of is simply not there
        return None, None, None
    return lat, lon, taken


def inspect_photo(path: Path) -> PhotoFacts:
    """Decode the file at ``path`` and say what it is; :class:`UnsupportedPhotoError` unless it
    is a whole JPEG, PNG or WebP image of at most :data:`MAX_PHOTO_PIXELS`."""
    refusal = "the upload is not a JPEG, PNG or WebP image (its content decides, not its name)"
    try:
        # only the three decoders are tried: nothing else in Pillow ever parses an upload
        with Image.open(path, formats=list(PHOTO_FORMATS)) as image:
            media_type = PHOTO_FORMATS[str(image.format)]
            width, height = image.size
            if width * height > MAX_PHOTO_PIXELS:
                raise UnsupportedPhotoError(
                    f"the image is {width}×{height} pixels: at most "
                    f"{MAX_PHOTO_PIXELS // 1_000_000} megapixels are kept"
                )
            lat, lon, taken = read_exif(image)
            if media_type == "image/jpeg":
                # every coefficient is still read (a truncated file fails), at 1/8 the memory
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except UnsupportedPhotoError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise UnsupportedPhotoError(refusal) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedPhotoError(f"{refusal}: it does not decode ({exc})") from None
    return PhotoFacts(media_type, width, height, lat, lon, taken)


class PhotoWriter:
    """One incoming photo: bytes to a temporary file in the store, hashed and counted."""

    def __init__(self, store: PhotoStore, limit: int) -> None:
        self._store = store
        self._limit = limit
        self._hash = hashlib.sha256()
        self.size = 0
        store.root.mkdir(parents=True, exist_ok=True)
        incoming = store.root / ".incoming"
        incoming.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=incoming, prefix="upload-")
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; :class:`PhotoTooLargeError` as soon as the limit is passed."""
        self.size += len(chunk)
        if self.size > self._limit:
            raise PhotoTooLargeError(
                f"the photo is larger than {self._limit:,} bytes (the tracker's photo_max_bytes)"
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self) -> StoredPhoto:
        """Check the content and move the file to its address (atomic rename; the same bytes
        already there are kept and the copy dropped)."""
        if self.size == 0:
            raise UnsupportedPhotoError("the photo is empty")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        facts = inspect_photo(self._path)
        sha256 = self._hash.hexdigest()
        target = self._store.path_of(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._path.unlink()
        else:
            os.replace(self._path, target)
        return StoredPhoto(sha256, self.size, facts)

    def discard(self) -> None:
        """Drop the temporary file (an upload refused or broken off)."""
        self._file.close()
        self._path.unlink(missing_ok=True)


@dataclass(frozen=True)
class PhotoStore:
    """The folder field photos are kept in, by SHA-256."""

    root: Path

    def path_of(self, sha256: str) -> Path:
        """Where the photo with this digest lives (two-level fan-out keeps folders small)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def writer(self, limit: int) -> PhotoWriter:
        """A :class:`PhotoWriter` for one upload of at most ``limit`` bytes."""
        return PhotoWriter(self, limit)

    def read(self, sha256: str) -> bytes | None:
        """The photo's bytes, or None if the file is gone."""
        try:
            return self.path_of(sha256).read_bytes()
        except FileNotFoundError:
            return None


def dossier_copy(data: bytes, media_type: str) -> tuple[bytes, str]:
    """The photo as the dossier embeds it: as is when small, else turned upright (EXIF
    orientation), shrunk to :data:`DOSSIER_MAX_SIDE` and re-encoded as JPEG."""
    with Image.open(io.BytesIO(data), formats=list(PHOTO_FORMATS)) as image:
        if len(data) <= DOSSIER_MAX_BYTES and max(image.size) <= DOSSIER_MAX_SIDE:
            return data, media_type
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((DOSSIER_MAX_SIDE, DOSSIER_MAX_SIDE))
        out = io.BytesIO()
        upright.convert("RGB").save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue(), "image/jpeg"
