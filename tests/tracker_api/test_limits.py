"""Request body limits: 413 before anything reads the body, authentication included."""

from __future__ import annotations

import io
import random
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import anyio
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from changedetect.tracker import transition
from changedetect.tracker.api import create_app
from changedetect.tracker.api import deps as api_deps
from changedetect.tracker.api.uploads import FRAMING_ALLOWANCE
from changedetect.tracker.settings import TrackerSettings

from .conftest import API_NOW, serve_app

KIB = 1024
MIB = 1024 * KIB
#: What an outside test sent, unauthenticated, to make the server buffer it before the 401.
HUGE = 100 * MIB


@pytest.fixture
def auth_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time a request's token or session is looked up (the calls still go through)."""
    calls: list[str] = []

    def spy(name: str, original):
        def recorded(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        return recorded

    for name in ("authenticate", "resolve_session"):
        original = getattr(api_deps, name, None)
        if original is not None:
            monkeypatch.setattr(api_deps, name, spy(name, original))
    return calls


def chunks(total: int, size: int = 64 * KIB) -> Iterator[bytes]:
    """A body of `total` bytes, made as it is sent (httpx sends it chunked: no Content-Length)."""
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"x" * part


#: The 413 of every route but the photo upload.
GENERAL = "the request body is larger than 64 KiB, the most this endpoint accepts"


def assert_413(response, detail: str) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == detail
    assert response.headers["connection"] == "close"


def test_an_oversized_body_is_refused_by_its_length_before_authentication(
    client, ids, auth, auth_calls
):
    path = f"/cases/{ids['z1']}/transitions"
    body = b'{"to": "verifying", "comment": "' + b"x" * (64 * KIB) + b'"}'
    assert_413(
        client.post(path, content=body, headers={"Content-Type": "application/json"}), GENERAL
    )
    assert_413(client.post(path, content=body, headers=auth["analyst"]), GENERAL)
    assert auth_calls == []
    # a body within the limit goes on to authentication as before
    assert client.post(path, json={"to": "verifying"}, headers=auth["analyst"]).status_code == 200
    assert auth_calls == ["authenticate"]


def test_an_oversized_chunked_body_is_refused_before_authentication(client, ids, auth_calls):
    path = f"/cases/{ids['z1']}/transitions"
    response = client.post(
        path, content=chunks(200 * KIB), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_413(response, GENERAL)
    assert auth_calls == []


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"tracker.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("tracker.test", 80),
    }


def call_asgi(app, scope: dict, body: Iterator[bytes]) -> tuple[int, bytes, int]:
    """Run one request through the ASGI app, its body pulled chunk by chunk as a server hands
    it on; (status, answer body, chunks the app pulled)."""
    pulled = 0
    nxt = next(body, None)
    answer: dict = {"status": None, "body": b""}

    async def receive() -> dict:
        nonlocal pulled, nxt
        if nxt is None:
            return {"type": "http.disconnect"}
        pulled += 1
        part, nxt = nxt, next(body, None)
        return {"type": "http.request", "body": part, "more_body": nxt is not None}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    anyio.run(app, scope, receive, send)
    return answer["status"], answer["body"], pulled


def test_a_streamed_100_mb_body_stops_at_the_limit_and_is_never_buffered(db, ids, auth_calls):
    """As the server sees a chunked upload: the app pulls chunks one by one. It must stop
    pulling right after the limit, not read 100 MB to answer 401."""
    app = create_app(db, now=API_NOW)
    scope = http_scope(
        "POST",
        f"/cases/{ids['z1']}/transitions",
        [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    )
    status, body, pulled = call_asgi(app, scope, chunks(HUGE))
    assert status == 413 and b"64 KiB" in body
    assert pulled <= 2  # 64 KiB chunks: the one that fills the limit, the one past it
    assert auth_calls == []


def test_a_malformed_content_length_is_refused(db, ids):
    app = create_app(db, now=API_NOW)
    scope = http_scope("POST", f"/cases/{ids['z1']}/transitions", [(b"content-length", b"12x")])
    status, body, pulled = call_asgi(app, scope, iter([b"{}"]))
    assert status == 400 and b"Content-Length" in body and pulled == 0


def noise_png(side: int = 200) -> bytes:
    """A PNG of random pixels: incompressible, so ~120 kB, well over the general 64 KiB."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def test_photo_uploads_have_their_own_larger_limit(db, ids, auth, auth_calls):
    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    settings = TrackerSettings(photo_max_bytes=300 * KIB)
    photos = f"/cases/{ids['z1']}/photos"
    photo = noise_png()
    assert 64 * KIB < len(photo) < 300 * KIB
    too_large = "the photo is larger than 307,200 bytes (the tracker's photo_max_bytes)"
    with TestClient(create_app(db, now=API_NOW, settings=settings)) as client:
        files = {"photo": ("site.png", photo, "image/png")}
        assert client.post(photos, files=files, headers=auth["officer"]).status_code == 201
        auth_calls.clear()
        # announced over the photo and its form's framing: refused before authentication
        body = b"x" * (300 * KIB + FRAMING_ALLOWANCE + 1)
        assert_413(client.post(photos, content=body), too_large)
        assert auth_calls == []
        # streamed without a length: cut off where it passes the limit
        multipart = {**auth["officer"], "Content-Type": "multipart/form-data; boundary=b"}
        r = client.post(photos, content=chunks(400 * KIB), headers=multipart)
        assert_413(r, too_large)
        # the larger limit is the photo route's alone
        other = f"/cases/{ids['z1']}/transitions"
        assert_413(client.post(other, content=b"x" * (150 * KIB)), GENERAL)
        assert_413(client.put(photos, content=b"x" * (150 * KIB)), GENERAL)


def test_the_real_server_answers_an_announced_100_mb_body_at_once(db, ids):
    """Over a socket, as the outside test did: the headers announce 100 MB and no byte of it
    is sent. The answer must come without waiting for (and holding) the body."""
    with serve_app(create_app(db, now=API_NOW)) as base:
        host, port = urlsplit(base).hostname, urlsplit(base).port
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(
                f"POST /cases/{ids['z1']}/transitions HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n".encode()
            )
            reply = b""
            while part := sock.recv(65536):  # times out (fails) if the server waits for the body
                reply += part  # until the server closes: the 413 says Connection: close
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"the most this endpoint accepts" in reply
