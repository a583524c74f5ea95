"""One photo read from a ``multipart/form-data`` request as it streams in, within a size limit.

FastAPI's ``UploadFile`` would have Starlette read the whole body (spooled to disk, unbounded)
before the route runs, so the limit could only be checked afterwards. Here python-multipart's
streaming parser is fed the body chunk by chunk: the photo's bytes go straight to the photo
store's temporary file, a declared ``Content-Length`` over the limit is refused before anything
is read, and a body that passes the limit while streaming is refused at that chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import HTTPException, Request, status
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from ..errors import PhotoTooLargeError
from ..photos import PhotoStore, PhotoWriter, StoredPhoto

#: The form field that carries the photo.
PHOTO_FIELD = "photo"
#: Room for the multipart framing and part headers around the photo's bytes.
FRAMING_ALLOWANCE = 16 * 1024


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


@dataclass
class _PhotoForm:
    """python-multipart's callbacks: find the one ``photo`` file part, queue its bytes."""

    store: PhotoStore
    limit: int
    writer: PhotoWriter | None = None
    filename: str | None = None
    pending: list[bytes] = field(default_factory=list)
    _header_name: bytes = b""
    _header_value: bytes = b""
    _disposition: bytes = b""
    _in_photo: bool = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._in_photo = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name != PHOTO_FIELD:
            raise _unprocessable(
                f"unexpected form field {name!r}: send one file field named {PHOTO_FIELD!r}"
            )
        if b"filename" not in options:
            raise _unprocessable(f"the {PHOTO_FIELD!r} field must be a file, not text")
        if self.writer is not None:
            raise _unprocessable("one photo per request: upload each photo on its own")
        self.filename = options[b"filename"].decode("utf-8", "replace")
        self.writer = self.store.writer(self.limit)
        self._in_photo = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_photo:
            self.pending.append(bytes(data[start:end]))

    def drain(self) -> list[bytes]:
        out, self.pending = self.pending, []
        return out


async def receive_photo(
    request: Request, store: PhotoStore, limit: int
) -> tuple[StoredPhoto, str | None]:
    """The request's ``photo`` file, checked and in ``store``; (it, the name the client gave).

    Raises :class:`~changedetect.tracker.errors.PhotoTooLargeError` (413) past ``limit``,
    :class:`~changedetect.tracker.errors.UnsupportedPhotoError` (415) for content that is not a
    JPEG, PNG or WebP image, and a 415 / 422 ``HTTPException`` for a body that is not a
    multipart form with one photo. Nothing is left in the store when it raises.
    """
    media_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the photo as multipart/form-data with a file field named {PHOTO_FIELD!r}",
        )
    too_large = PhotoTooLargeError(
        f"the photo is larger than {limit:,} bytes (the tracker's photo_max_bytes)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FRAMING_ALLOWANCE:
        raise too_large  # refused before a byte of the body is read
    form = _PhotoForm(store, limit)
    parser = MultipartParser(boundary, form.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + FRAMING_ALLOWANCE:
                raise too_large
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise _unprocessable(f"the multipart body is malformed: {exc}") from None
            if form.writer is not None and form.pending:
                await run_in_threadpool(_write_all, form.writer, form.drain())
        try:
            parser.finalize()
        except FormParserError as exc:
            raise _unprocessable(f"the multipart body is malformed: {exc}") from None
        if form.writer is None:
            raise _unprocessable(f"no photo: send the image as a file field named {PHOTO_FIELD!r}")
        stored = await run_in_threadpool(form.writer.commit)
    except BaseException:
        if form.writer is not None:
            form.writer.discard()
        raise
    return stored, form.filename


def _write_all(writer: PhotoWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)
