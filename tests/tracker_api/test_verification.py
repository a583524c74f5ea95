"""The field verification record over HTTP: photos from the phone, the verdict with its note,
position and photos, and the officer's findings in the case dossier."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from changedetect.errors import ConfigError
from changedetect.navigation import wgs84_to_gcj02
from changedetect.tracker import TrackerDB, transition
from changedetect.tracker.api import create_app
from changedetect.tracker.api.deps import CSRF_HEADER
from changedetect.tracker.models import Case, CasePhoto, EventPosition
from changedetect.tracker.photos import display_name
from changedetect.tracker.settings import TrackerSettings

from .conftest import API_NOW
from .test_webhook import Receiver, config

#: Where the officer stood: a few metres from the z1 patch, at 10:31 Beijing time.
TAKEN_AT = "2025-07-02T10:31:05+08:00"


def image_bytes(fmt: str, size: tuple[int, int] = (48, 32), *, noise: bool = False, exif=None):
    """An image of `size` in `fmt` (noise makes it incompressible, so its bytes scale with it)."""
    if noise:
        img = Image.frombytes(
            "RGB", size, bytes(hashlib.shake_256(b"x").digest(3 * size[0] * size[1]))
        )
    else:
        img = Image.new("RGB", size, (120, 90, 40))
    out = io.BytesIO()
    img.save(out, fmt, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def upload(client, case_id, data, headers, *, name="IMG_0001.jpg", content_type="image/jpeg"):
    return client.post(
        f"/cases/{case_id}/photos", files={"photo": (name, data, content_type)}, headers=headers
    )


def verify(client, case_id, headers, **body):
    payload = {
        "verdict": "violation",
        "note": "quarry face cut since spring; no permit on site",
        "position": {"lat": 34.00031, "lon": 108.25052, "accuracy_m": 8.0, "taken_at": TAKEN_AT},
        "photo_ids": [],
    }
    payload.update(body)
    return client.post(f"/cases/{case_id}/verification", json=payload, headers=headers)


def stored_files(root: Path) -> list[Path]:
    """The photo files in the store (not its temporary folder)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts)


@pytest.fixture
def photos_dir(db_url) -> Path:
    """The default photo folder: beside the SQLite ledger."""
    return Path(db_url.removeprefix("sqlite:///")).parent / "photos"


@pytest.fixture
def verifying(db, ids):
    """z1 and z2 (Zhouzhi) and h1 (Huyi) sent for verification by the analyst."""
    for key in ("z1", "z2", "h1"):
        transition(db, ids[key], "verifying", actor="ana.lyst", now=API_NOW)
    return ids


# --- uploads ----------------------------------------------------------------------------------


def test_the_content_decides_the_type_not_the_name(client, auth, verifying, photos_dir):
    z1 = verifying["z1"]
    png = image_bytes("PNG")
    # a PNG sent as IMG_0001.jpg, image/jpeg: kept as the PNG it is
    r = upload(client, z1, png, auth["officer"])
    assert r.status_code == 201, r.text
    photo = r.json()
    assert (photo["media_type"], photo["width"], photo["height"]) == ("image/png", 48, 32)
    assert photo["sha256"] == hashlib.sha256(png).hexdigest() and photo["byte_size"] == len(png)
    assert photo["filename"] == "IMG_0001.jpg" and photo["uploaded_by"] == "zhou.officer"
    assert photo["event_id"] is None and photo["url"] == f"/cases/{z1}/photos/{photo['id']}"
    webp = upload(client, z1, image_bytes("WEBP"), auth["officer"], name="x.webp")
    assert webp.status_code == 201 and webp.json()["media_type"] == "image/webp"
    # anything that is not a whole JPEG/PNG/WebP is refused, whatever it claims to be
    refused = {
        "text named .jpg": b"<html><script>alert(1)</script></html>",
        "GIF": image_bytes("GIF"),
        "truncated JPEG": image_bytes("JPEG", (64, 64), noise=True)[:-400],
        "empty": b"",
    }
    for what, data in refused.items():
        r = upload(client, z1, data, auth["officer"], name="evidence.jpg")
        assert r.status_code == 415, what
        assert "JPEG, PNG or WebP" in r.json()["detail"] or "empty" in r.json()["detail"], what
    # only the two accepted photos are in the store, and no temporary file is left behind
    assert len(stored_files(photos_dir)) == 2
    assert list((photos_dir / ".incoming").iterdir()) == []


def test_a_body_that_is_not_a_photo_form_is_refused(client, auth, verifying):
    z1 = verifying["z1"]
    url = f"/cases/{z1}/photos"
    r = client.post(
        url, content=image_bytes("PNG"), headers={**auth["officer"], "Content-Type": "image/png"}
    )
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post(
        url, data={"note": "no file"}, files={"other": ("a.png", b"x")}, headers=auth["officer"]
    )
    assert r.status_code == 422 and "unexpected form field 'note'" in r.json()["detail"]
    two = [("photo", ("a.png", image_bytes("PNG"))), ("photo", ("b.png", image_bytes("PNG")))]
    r = client.post(url, files=two, headers=auth["officer"])
    assert r.status_code == 422 and "one photo per request" in r.json()["detail"]


def test_a_photo_over_the_size_limit_is_413_and_not_kept(db, auth, verifying, photos_dir):
    big = image_bytes("PNG", (200, 200), noise=True)  # ~120 kB
    settings = TrackerSettings(photo_max_bytes=50_000)
    with TestClient(create_app(db, now=API_NOW, settings=settings)) as c:
        assert c.get("/me", headers=auth["officer"]).json()["photo_max_bytes"] == 50_000
        r = upload(c, verifying["z1"], big, auth["officer"])
        assert r.status_code == 413 and "50,000 bytes" in r.json()["detail"]
        small = upload(c, verifying["z1"], image_bytes("PNG"), auth["officer"])
        assert small.status_code == 201
    assert len(stored_files(photos_dir)) == 1
    assert list((photos_dir / ".incoming").iterdir()) == []


def test_the_limit_holds_while_streaming_without_a_declared_length(db, auth, verifying):
    """A chunked upload (no Content-Length) is cut off at the chunk that passes the limit: the
    rest of the body is never read."""
    app = create_app(db, now=API_NOW, settings=TrackerSettings(photo_max_bytes=100_000))
    boundary = "fieldrecordboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    chunk = 64 * 1024
    total_chunks = 10 * 1024 * 1024 // chunk  # a 10 MB body
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": pulled < total_chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/cases/{verifying['z1']}/photos",
        "raw_path": f"/cases/{verifying['z1']}/photos".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", auth["officer"]["Authorization"].encode()),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    # 100 kB + framing is three 64 kB chunks: the body's other 150-odd were never pulled
    assert pulled <= 4, pulled


def test_only_those_who_verify_the_case_may_add_photos(client, auth, verifying, ids, seeded):
    png = image_bytes("PNG")
    # another county's case: as if it did not exist
    r = upload(client, verifying["h1"], png, auth["officer"])
    assert r.status_code == 404 and r.json()["detail"] == f"case {verifying['h1']} not found"
    assert upload(client, 999_999, png, auth["officer"]).status_code == 404
    # a viewer gives no verdicts
    r = upload(client, verifying["z1"], png, auth["viewer"])
    assert r.status_code == 403 and "viewer" in r.json()["detail"]
    # a case not (or no longer) being verified takes no photos
    r = upload(client, ids["z3"], png, auth["officer"])
    assert r.status_code == 409 and "is issued" in r.json()["detail"]
    assert upload(client, verifying["z1"], png, {}).status_code == 401
    # the review page's session needs the CSRF header for a write, as for a transition
    assert client.post("/login", json={"token": seeded.tokens["officer"]}).status_code == 200
    r = upload(client, verifying["z1"], png, {})
    assert r.status_code == 403 and CSRF_HEADER in r.json()["detail"]
    assert upload(client, verifying["z1"], png, {CSRF_HEADER: "1"}).status_code == 201


def test_photos_are_stored_by_sha256_outside_anything_served(
    db, db_url, client, auth, verifying, photos_dir, seeded
):
    data = image_bytes("JPEG", (40, 30))
    digest = hashlib.sha256(data).hexdigest()
    first = upload(client, verifying["z1"], data, auth["officer"])
    assert first.status_code == 201
    # a phone retrying the same upload gets the same photo, not a second one
    again = upload(client, verifying["z1"], data, auth["officer"], name="retry.jpg")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # the same bytes for another case: a photo of that case, the same file
    other = upload(client, verifying["z2"], data, auth["officer"])
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert stored_files(photos_dir) == [photos_dir / digest[:2] / digest]
    assert (photos_dir / digest[:2] / digest).read_bytes() == data
    with db.session() as s:
        assert s.scalars(select(CasePhoto.sha256)).all() == [digest, digest]
    # the store is not under the evidence folders chips are served from, nor the app's files
    evidence = seeded.data_dir / "night1"
    assert not photos_dir.resolve().is_relative_to(evidence.resolve())
    # ... and an app configured to keep photos inside a served folder refuses to start
    with pytest.raises(ConfigError, match="inside .* which the app serves files from"):
        create_app(db, evidence_roots=[seeded.data_dir], photo_dir=seeded.data_dir / "photos")
    app_files = Path(create_app.__code__.co_filename).parent
    with pytest.raises(ConfigError, match="serves files from"):
        create_app(db, photo_dir=app_files / "static" / "photos")
    # a ledger with no folder of its own (PostgreSQL, in memory) must be given one
    with TrackerDB("sqlite://") as memory, pytest.raises(ConfigError, match="photo folder"):
        create_app(memory)


def test_a_photo_is_served_only_to_those_who_see_its_case(client, auth, verifying):
    png = image_bytes("PNG")
    photo = upload(client, verifying["z1"], png, auth["officer"]).json()
    url = photo["url"]
    for role in ("officer", "analyst", "viewer"):
        r = client.get(url, headers=auth[role])
        assert r.status_code == 200 and r.content == png, role
        assert r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "private, no-store"
        assert r.headers["content-disposition"] == (
            f'inline; filename="case-{verifying["z1"]}-photo-{photo["id"]}.png"'
        )
    assert client.get(url, headers=auth["huyi"]).status_code == 404
    assert client.get(url).status_code == 401
    # the photo is z1's: asking for it under another case finds nothing
    r = client.get(f"/cases/{verifying['z2']}/photos/{photo['id']}", headers=auth["analyst"])
    assert r.status_code == 404


def test_the_phone_file_name_is_cleaned_for_display_and_never_used_as_a_path():
    assert display_name("C:\\Users\\li\\DCIM\\IMG_0001.JPG") == "IMG_0001.JPG"
    assert display_name("../../etc/passwd") == "passwd"
    # a right-to-left override would show "evil\u202egpj.exe" as "evilexe.jpg"
    assert display_name("evil\u202egpj.exe\x00\n") == "evilgpj.exe"
    assert display_name("现场照片 1.jpg") == "现场照片 1.jpg"
    assert display_name("/") is None and display_name(None) is None
    assert len(display_name("a" * 500 + ".jpg")) == 200


def test_exif_position_and_time_of_the_camera_are_kept(client, auth, verifying):
    exif = Image.Exif()
    gps = {1: "N", 2: (34.0, 0.0, 1.116), 3: "E", 4: (108.0, 15.0, 1.872)}
    exif[0x8825] = gps  # GPSInfo
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2025:07:02 10:31:05"  # DateTimeOriginal
    sub[0x9011] = "+08:00"  # OffsetTimeOriginal
    data = image_bytes("JPEG", exif=exif)
    photo = upload(client, verifying["z1"], data, auth["officer"]).json()
    assert photo["exif_lat"] == pytest.approx(34.00031, abs=1e-6)
    assert photo["exif_lon"] == pytest.approx(108.25052, abs=1e-6)
    assert photo["exif_taken_at"] == "2025-07-02T10:31:05+08:00"
    plain = upload(client, verifying["z1"], image_bytes("PNG"), auth["officer"]).json()
    assert (plain["exif_lat"], plain["exif_lon"], plain["exif_taken_at"]) == (None, None, None)


# --- the verdict with its field record --------------------------------------------------------


def test_the_verdict_records_note_position_and_photos_in_the_history(client, db, auth, verifying):
    z1 = verifying["z1"]
    ids = [
        upload(client, z1, image_bytes("PNG", (30 + i, 20)), auth["officer"]).json()["id"]
        for i in range(2)
    ]
    r = verify(client, z1, auth["officer"], photo_ids=ids)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "violation" and r.json()["verified_at"] is not None
    detail = client.get(f"/cases/{z1}", headers=auth["officer"]).json()
    event = detail["events"][-1]
    assert (event["kind"], event["from_state"], event["to_state"], event["actor"]) == (
        "transition",
        "verifying",
        "violation",
        "zhou.officer",
    )
    assert event["comment"] == "quarry face cut since spring; no permit on site"
    assert dt.datetime.fromisoformat(event["at"]) == API_NOW  # the server's time of receipt
    position = event["position"]
    assert (position["lat"], position["lon"], position["accuracy_m"], position["source"]) == (
        34.00031,
        108.25052,
        8.0,
        "device",
    )
    # the phone's own time, kept (the same instant, whatever its clock said)
    assert dt.datetime.fromisoformat(position["taken_at"]) == dt.datetime.fromisoformat(TAKEN_AT)
    assert [p["id"] for p in event["photos"]] == ids
    assert all(
        p["event_id"] == event["id"] and p["url"].endswith(f"/{p['id']}") for p in event["photos"]
    )
    assert all(e["position"] is None and e["photos"] == [] for e in detail["events"][:-1])
    with db.session() as s:
        stored = s.get(EventPosition, event["id"])
        assert stored.taken_at == dt.datetime(2025, 7, 2, 2, 31, 5, tzinfo=dt.UTC)


def test_a_photo_of_another_case_is_refused_and_nothing_is_recorded(client, db, auth, verifying):
    z1, z2 = verifying["z1"], verifying["z2"]
    theirs = upload(client, z2, image_bytes("PNG"), auth["officer"]).json()["id"]
    mine = upload(client, z1, image_bytes("JPEG"), auth["officer"]).json()["id"]
    r = verify(client, z1, auth["officer"], photo_ids=[mine, theirs])
    assert r.status_code == 422
    assert r.json()["detail"] == (
        f"body.photo_ids: photo {theirs} is not a photo of case {z1}: upload it to this case "
        f"first (POST /cases/{z1}/photos)"
    )
    assert r.json()["errors"][0]["loc"] == ["body", "photo_ids"]
    # no photo id says whether it exists elsewhere: a made-up one reads the same
    made_up = verify(client, z1, auth["officer"], photo_ids=[987654])
    assert made_up.json()["detail"].startswith(
        f"body.photo_ids: photo 987654 is not a photo of case {z1}"
    )
    with db.session() as s:
        assert s.scalar(select(Case.state).where(Case.id == z1)) == "verifying"
        assert s.scalars(select(CasePhoto.event_id)).all() == [None, None]
        assert s.scalars(select(EventPosition)).all() == []
    # a photo goes with one verdict only
    assert verify(client, z1, auth["officer"], photo_ids=[mine]).status_code == 200
    z2_verdict = verify(client, z2, auth["officer"], photo_ids=[theirs])
    assert z2_verdict.status_code == 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lat": 91.0}, "position.lat"),
        ({"lon": -180.5}, "position.lon"),
        ({"accuracy_m": -1.0}, "position.accuracy_m"),
        ({"lat": "NaN"}, "position.lat"),
        ({"lon": "Infinity"}, "position.lon"),
        ({"taken_at": "2025-07-02T10:31:05"}, "needs a UTC offset"),
        ({"taken_at": "yesterday"}, "position.taken_at"),
        ({"source": "satellite"}, "position.source"),
    ],
)
def test_the_position_is_validated(client, auth, verifying, change, message):
    position = {"lat": 34.0, "lon": 108.25, "accuracy_m": 5.0, "taken_at": TAKEN_AT, **change}
    r = verify(client, verifying["z1"], auth["officer"], position=position)
    assert r.status_code == 422 and message in r.json()["detail"], r.json()


def test_a_typed_in_position_needs_no_accuracy(client, auth, verifying):
    position = {"lat": 34.0003, "lon": 108.2505, "taken_at": TAKEN_AT, "source": "manual"}
    r = verify(client, verifying["z1"], auth["officer"], verdict="false_alarm", position=position)
    assert r.status_code == 200 and r.json()["state"] == "false_alarm"
    event = client.get(f"/cases/{verifying['z1']}", headers=auth["officer"]).json()["events"][-1]
    assert event["position"]["accuracy_m"] is None and event["position"]["source"] == "manual"


def test_the_verdict_follows_the_lifecycle_and_the_roles(client, auth, verifying, ids):
    assert verify(client, verifying["h1"], auth["officer"]).status_code == 404
    assert verify(client, verifying["z1"], auth["viewer"]).status_code == 403
    r = verify(client, ids["z3"], auth["officer"])  # issued: not being verified yet
    assert r.status_code == 409 and "is issued and cannot move to violation" in r.json()["detail"]
    r = verify(client, verifying["z1"], auth["officer"], verdict="closed")
    assert r.status_code == 422
    assert verify(client, verifying["z1"], auth["analyst"]).status_code == 200
    assert verify(client, verifying["z1"], auth["analyst"]).status_code == 409  # given already


def test_the_webhook_hears_of_the_verdict_with_its_field_record(db, auth, verifying, httpserver):
    receiver = Receiver(httpserver)
    app = create_app(db, now=API_NOW, webhook=config(receiver.url), webhook_interval_s=60)
    with TestClient(app) as c:
        photo = upload(c, verifying["z1"], image_bytes("PNG"), auth["officer"]).json()
        assert (
            verify(c, verifying["z1"], auth["officer"], photo_ids=[photo["id"]]).status_code == 200
        )
        deadline = time.monotonic() + 5
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    [payload] = receiver.bodies()
    assert payload["event"] == "case.transitioned" and payload["to_state"] == "violation"
    record = payload["field_record"]
    assert record["photo_ids"] == [photo["id"]]
    assert record["position"]["lat"] == 34.00031 and record["position"]["accuracy_m"] == 8.0


# --- the dossier ------------------------------------------------------------------------------


def embedded_images(page: str) -> list[Image.Image]:
    found = re.findall(r"src='data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)'", page)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for _, data in found]


def test_the_dossier_shows_the_findings_on_site_with_the_photos_inline(client, auth, verifying):
    z1 = verifying["z1"]
    small = upload(client, z1, image_bytes("PNG", (48, 32)), auth["officer"]).json()
    large = upload(
        client,
        z1,
        image_bytes("JPEG", (2400, 1800), noise=True),
        auth["officer"],
        name="DSC_0042.jpg",
    ).json()
    assert large["byte_size"] > 700_000
    assert (
        verify(client, z1, auth["officer"], photo_ids=[small["id"], large["id"]]).status_code == 200
    )
    r = client.get(f"/cases/{z1}/dossier", headers=auth["officer"])
    assert r.status_code == 200
    page = r.text
    assert "Findings on site" in page and "quarry face cut since spring" in page
    assert "34.000310, 108.250520" in page  # where the officer stood, WGS84 (lat, lon)
    glon, glat = wgs84_to_gcj02(108.25052, 34.00031)
    assert f"{glat:.6f}, {glon:.6f}" in page  # ... and as Amap shows it
    assert "±8 m" in page and "2025-07-02 02:31 UTC" in page  # accuracy; the phone's time
    assert re.search(r"distance to the patch centre</th><td>[\d,]+ m", page)
    assert "DSC_0042.jpg" in page
    # the two photos and the two chips, all inline; the large photo shrunk for the page
    images = embedded_images(page)
    assert len(images) == 4
    assert images[0].size == (48, 32) and images[0].format == "PNG"
    assert images[1].size == (1600, 1200) and images[1].format == "JPEG"
    assert [i.size for i in images[2:]] == [(64, 64), (64, 64)]
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_a_dossier_says_when_no_field_verdict_is_recorded(client, auth, ids):
    page = client.get(f"/cases/{ids['z1']}/dossier", headers=auth["analyst"]).text
    assert "no field verdict recorded yet" in page
