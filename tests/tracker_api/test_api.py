"""The HTTP API with the real app and a real ledger, role by role."""

from __future__ import annotations

import base64
import csv
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import shapely
from PIL import Image
from shapely.geometry import shape
from sqlalchemy import select

from changedetect.navigation import wgs84_to_gcj02
from changedetect.tracker import head_revision, ingest
from changedetect.tracker.models import Case, CaseEvent
from tests.tracker.helpers import NOW, feature, rect

from .conftest import API_NOW, CHANGE_CHIP_SIZE, COUNTIES, SITES, write_night

ALL = set(COUNTIES) | {"evil"}
ZHOUZHI = {k for k, c in COUNTIES.items() if c == "Zhouzhi"} | {"evil"}


def keys(page: dict, ids: dict[str, int]) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[item["id"]] for item in page["items"]}


def state_of(db, case_id: int) -> str:
    with db.session() as s:
        return s.scalar(select(Case.state).where(Case.id == case_id))


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Bearer cdt_" + "A" * 43},  # well formed, never issued
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "malformed", "unknown", "basic"],
)
def test_requests_without_a_valid_token_answer_401(client, headers, ids):
    for path in ("/cases", f"/cases/{ids['z1']}", "/cases.geojson", "/me"):
        r = client.get(path, headers=headers)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["detail"]
    r = client.post(f"/cases/{ids['z1']}/transitions", json={"to": "verifying"}, headers=headers)
    assert r.status_code == 401


def test_a_revoked_token_and_a_disabled_user_are_refused(client, db, auth):
    from changedetect.tracker.auth import set_user_active

    assert client.get("/me", headers=auth["revoked"]).status_code == 401
    assert client.get("/me", headers=auth["viewer"]).status_code == 200
    # the counties a case can be assigned to, for those who may assign
    assert client.get("/me", headers=auth["analyst"]).json()["counties"] == ["Huyi", "Zhouzhi"]
    assert client.get("/me", headers=auth["officer"]).json()["counties"] == []
    set_user_active(db, "vi.ewer", False)
    assert client.get("/me", headers=auth["viewer"]).status_code == 401


def test_health_needs_no_token(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "schema_revision": head_revision()}


def test_me_describes_each_role(client, auth):
    analyst = client.get("/me", headers=auth["analyst"]).json()
    assert analyst["role"] == "analyst" and analyst["county"] is None and analyst["can_assign"]
    assert analyst["transitions"]["issued"] == ["verifying"]
    assert analyst["transitions"]["rectifying"] == ["closed"]
    officer = client.get("/me", headers=auth["officer"]).json()
    assert officer["county"] == "Zhouzhi" and not officer["can_assign"]
    assert officer["transitions"] == {
        "verifying": ["compliant", "false_alarm", "violation"],
        "violation": ["rectifying"],
    }
    viewer = client.get("/me", headers=auth["viewer"]).json()
    assert viewer["transitions"] == {} and not viewer["can_assign"]


# --- listing, filters, paging -----------------------------------------------------------------


def test_analyst_and_viewer_list_every_county(client, auth, ids):
    for role in ("analyst", "viewer"):
        page = client.get("/cases", headers=auth[role]).json()
        assert page["total"] == len(ALL)
        assert keys(page, ids) == ALL
    first = client.get("/cases", headers=auth["analyst"]).json()["items"][0]
    assert first["priority"] == "urgent"  # most pressing first
    # what an officer navigates by (changedetect.navigation)
    gcj = wgs84_to_gcj02(*first["centroid"])
    assert first["centroid_gcj02"] == pytest.approx(gcj, abs=1e-6)
    assert first["area_mu"] == pytest.approx(first["area_m2"] / 666.667, abs=0.01)
    assert first["link_amap"].startswith("https://uri.amap.com/marker?position=")
    assert first["link_geo"].startswith("geo:")
    assert first["allowed_transitions"] == ["verifying"]
    viewer_item = client.get("/cases", headers=auth["viewer"]).json()["items"][0]
    assert viewer_item["allowed_transitions"] == []


def test_pagination_covers_every_case_once_with_the_total(client, auth, ids):
    seen: list[int] = []
    for offset in range(0, 10, 3):
        page = client.get(f"/cases?limit=3&offset={offset}", headers=auth["analyst"]).json()
        assert page["total"] == len(ALL)
        assert page["limit"] == 3 and page["offset"] == offset
        seen += [item["id"] for item in page["items"]]
    assert sorted(seen) == sorted(ids.values())
    beyond = client.get("/cases?limit=3&offset=100", headers=auth["analyst"]).json()
    assert beyond["items"] == [] and beyond["total"] == len(ALL)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=issued", ALL),
        ("state=verifying", set()),
        ("county=Huyi", {"h1", "h2"}),
        ("county=Huyi&county=Nowhere", {"h1", "h2"}),
        ("change_type=quarry", {"z1", "z4", "h1", "evil"}),
        ("change_type=quarry&county=Zhouzhi", {"z1", "z4", "evil"}),
        ("tier=red_line_core&change_type=construction", {"z2"}),
        ("detected_from=2025-06-23", {"z3", "z4", "z5", "h1", "h2", "evil"}),
        ("detected_from=2025-06-10&detected_to=2025-06-20", {"z2"}),
        ("detected_to=2025-06-05", {"z1"}),
    ],
)
def test_filters(client, auth, ids, query, expected):
    page = client.get(f"/cases?{query}&limit=100", headers=auth["analyst"]).json()
    assert keys(page, ids) == expected
    assert page["total"] == len(expected)


def test_bbox_filter_selects_cases_by_location(client, auth, ids):
    west_z = rect(-100, -100, 1200).bounds  # covers z1, z2, z3 (x = 0, 500, 1000)
    bbox = ",".join(f"{v:.6f}" for v in west_z)
    page = client.get(f"/cases?bbox={bbox}", headers=auth["analyst"]).json()
    assert keys(page, ids) == {"z1", "z2", "z3"}
    for item in page["items"]:
        lon, lat = item["centroid"]
        assert west_z[0] <= lon <= west_z[2] and west_z[1] <= lat <= west_z[3]


def test_officer_sees_only_its_county(client, auth, ids):
    page = client.get("/cases?limit=100", headers=auth["officer"]).json()
    assert keys(page, ids) == ZHOUZHI
    assert page["total"] == len(ZHOUZHI)
    assert {i["assigned_county"] for i in page["items"]} == {"Zhouzhi"}
    # asking for another county cannot widen the scope
    other = client.get("/cases?county=Huyi", headers=auth["officer"]).json()
    assert other == {"total": 0, "limit": 50, "offset": 0, "items": []}
    huyi = client.get("/cases", headers=auth["huyi"]).json()
    assert keys(huyi, ids) == {"h1", "h2"}


def test_another_countys_case_answers_404_exactly_like_a_missing_one(client, auth, ids):
    foreign = client.get(f"/cases/{ids['h1']}", headers=auth["officer"])
    missing = client.get("/cases/999999", headers=auth["officer"])
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == f"case {ids['h1']} not found"
    assert missing.json()["detail"] == "case 999999 not found"
    for path in (
        f"/cases/{ids['h1']}/chips/before",
        f"/cases/{ids['h1']}/chips/after",
    ):
        assert client.get(path, headers=auth["officer"]).status_code == 404
    r = client.post(
        f"/cases/{ids['h1']}/transitions", json={"to": "verifying"}, headers=auth["officer"]
    )
    assert r.status_code == 404
    assert client.get(f"/cases/{ids['h1']}", headers=auth["huyi"]).status_code == 200


# --- one case ---------------------------------------------------------------------------------


def test_case_detail_has_its_history_and_working_chip_links(client, auth, ids, db, seeded):
    # a second night sees z1 again (shifted a little): the case gets a second detection
    night2 = [feature("clue-z1-night2", rect(10, 5, 85), "2025-06-30", county="Zhouzhi")]
    ingest(db, write_night(seeded.data_dir / "night2-detail", night2), now=NOW)
    r = client.get(f"/cases/{ids['z1']}", headers=auth["officer"])
    assert r.status_code == 200
    case = r.json()
    assert case["id"] == ids["z1"] and case["state"] == "issued"
    assert [d["clue_id"] for d in case["detection_history"]] == ["clue-z1", "clue-z1-night2"]
    assert case["detections"] == 2 and case["last_detected_on"] == "2025-06-30"
    assert [e["kind"] for e in case["events"]] == ["created"]
    assert case["events"][0]["actor"] == "ingest"
    assert shape(case["geometry_union"]).contains(shape(case["geometry_first"]).centroid)
    assert "chip_before" not in case["detection_history"][0]  # no server paths leak
    assert "chip_change" not in case["detection_history"][0]
    for d in case["detection_history"]:
        for which in ("before", "after"):
            chip = client.get(d[f"chip_{which}_url"], headers=auth["officer"])
            assert chip.status_code == 200
            assert chip.headers["content-type"] == "image/png"
            assert chip.content.startswith(b"\x89PNG")
        # both of z1's nights come from runs before the NDVI-change chip
        assert d["chip_change_url"] is None
    r = client.get(f"/cases/{ids['z1']}/chips/change", headers=auth["officer"])
    assert r.status_code == 404
    assert r.json()["detail"] == f"no change chip available for case {ids['z1']}"
    # without clue_id: the latest detection's chip
    latest = client.get(f"/cases/{ids['z1']}/chips/after", headers=auth["officer"])
    by_clue = client.get(
        f"/cases/{ids['z1']}/chips/after?clue_id=clue-z1-night2", headers=auth["officer"]
    )
    assert latest.content == by_clue.content


def test_the_ndvi_change_chip_is_served_beside_before_and_after(client, auth, ids):
    case = client.get(f"/cases/{ids['z2']}", headers=auth["officer"]).json()
    (d,) = case["detection_history"]
    assert d["chip_change_url"] == f"/cases/{ids['z2']}/chips/change?clue_id=clue-z2"
    chip = client.get(d["chip_change_url"], headers=auth["officer"])
    assert chip.status_code == 200 and chip.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(chip.content)).size == CHANGE_CHIP_SIZE
    latest = client.get(f"/cases/{ids['z2']}/chips/change", headers=auth["officer"])
    assert latest.content == chip.content
    # as private as the case's other chips
    assert (
        client.get(f"/cases/{ids['h1']}/chips/change", headers=auth["officer"]).status_code == 404
    )
    assert client.get(f"/cases/{ids['h1']}/chips/change", headers=auth["huyi"]).status_code == 200


def test_a_case_dossier_is_one_printable_page_with_everything_inline(client, auth, ids, db):
    assert post(client, ids["z1"], "verifying", auth["analyst"]).status_code == 200
    r = post(client, ids["z1"], "violation", auth["officer"], comment="fresh spoil, no permit")
    assert r.status_code == 200
    r = client.get(f"/cases/{ids['z1']}/dossier", headers=auth["officer"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    case = client.get(f"/cases/{ids['z1']}", headers=auth["officer"]).json()
    lon, lat = case["centroid"]
    glon, glat = case["centroid_gcj02"]
    assert f"{lat:.6f}, {lon:.6f}" in page and f"{glat:.6f}, {glon:.6f}" in page
    assert f"{case['area_mu']} 亩" in page and "Qinling red line core" in page
    # both chips inline, the event trail with who and why
    chip = client.get(f"/cases/{ids['z1']}/chips/before", headers=auth["officer"]).content
    assert base64.b64encode(chip).decode("ascii") in page
    assert page.count("src='data:image/png;base64,") == 2
    # z1's clue has no NDVI-change chip: left out, not announced as missing
    assert "change chip" not in page and "NDVI change" not in page
    assert "zhou.officer" in page and "fresh spoil, no permit" in page and "violation" in page
    # nothing to fetch and nothing to run: it stands on its own, saved or printed
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # as private as the case
    assert client.get(f"/cases/{ids['z1']}/dossier", headers=auth["huyi"]).status_code == 404
    assert client.get(f"/cases/{ids['z1']}/dossier").status_code == 401


def test_the_dossier_holds_the_ndvi_change_chip_after_before_and_after(client, auth, ids):
    page = client.get(f"/cases/{ids['z2']}/dossier", headers=auth["officer"]).text
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    sizes = [Image.open(io.BytesIO(base64.b64decode(u))).size for u in uris]
    assert sizes == [(64, 64), (64, 64), CHANGE_CHIP_SIZE]
    change = client.get(f"/cases/{ids['z2']}/chips/change", headers=auth["officer"]).content
    assert uris[2] == base64.b64encode(change).decode("ascii")
    assert "alt='NDVI change chip'" in page and "brown: vegetation lost" in page


def test_chips_never_leave_their_evidence_folder(client, auth, ids):
    evil = ids["evil"]
    # before: ../../etc/passwd; after: a symlink inside chips/ pointing outside the folder;
    # change: ../outside.png, a real image beside the evidence folder
    for which in ("before", "after", "change"):
        r = client.get(f"/cases/{evil}/chips/{which}", headers=auth["analyst"])
        assert r.status_code == 404, which
        assert r.json()["detail"] == f"no {which} chip available for case {evil}"
    # a clue of another case cannot be used to reach its chip through this case
    r = client.get(f"/cases/{ids['z1']}/chips/before?clue_id=clue-h1", headers=auth["analyst"])
    assert r.status_code == 404
    assert (
        client.get(f"/cases/{ids['z1']}/chips/sideways", headers=auth["analyst"]).status_code == 422
    )


def test_evidence_roots_restrict_chips_to_configured_folders(db, auth, ids, tmp_path):
    from fastapi.testclient import TestClient

    from changedetect.tracker.api import create_app

    allowed = tmp_path / "evidence"  # beside the ledger (and its photos), not above it
    allowed.mkdir()
    with TestClient(create_app(db, now=API_NOW, evidence_roots=[allowed])) as c:
        r = c.get(f"/cases/{ids['z1']}/chips/before", headers=auth["analyst"])
        assert r.status_code == 404  # the chips exist, but outside the allowed root
        r = c.get(f"/cases/{ids['z2']}/chips/change", headers=auth["analyst"])
        assert r.status_code == 404


# --- GeoJSON export ---------------------------------------------------------------------------


def test_geojson_export_is_valid_rfc7946_with_the_same_filters(client, auth, ids):
    r = client.get("/cases.geojson?change_type=quarry", headers=auth["analyst"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/geo+json"
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert {f["id"] for f in fc["features"]} == {ids[k] for k in ("z1", "z4", "h1", "evil")}
    for f in fc["features"]:
        assert f["type"] == "Feature" and f["properties"]["id"] == f["id"]
        geom = shape(f["geometry"])
        assert geom.is_valid and geom.area > 0
        assert shapely.is_ccw(geom.exterior)  # RFC 7946: exterior rings counter-clockwise
        lon, lat = geom.centroid.coords[0]
        assert 108 < lon < 109 and 33.9 < lat < 34.1  # WGS84 lon/lat order
        assert isinstance(f["properties"]["tags"], str)  # flat for QGIS
    officer = client.get("/cases.geojson", headers=auth["officer"]).json()
    assert {f["properties"]["assigned_county"] for f in officer["features"]} == {"Zhouzhi"}
    assert len(officer["features"]) == len(ZHOUZHI)
    latest = client.get("/cases.geojson?geometry=latest", headers=auth["viewer"])
    assert latest.status_code == 200 and len(latest.json()["features"]) == len(ALL)


def test_geojson_export_is_paged_in_list_order_with_next_links(client, auth, ids):
    whole = client.get("/cases", params={"limit": 1000}, headers=auth["analyst"]).json()
    order = [item["id"] for item in whole["items"]]
    assert len(order) == len(ALL) >= 5
    seen, url, pages = [], "/cases.geojson?limit=2&geometry=latest", 0
    while url:
        r = client.get(url, headers=auth["analyst"])
        assert r.status_code == 200
        fc = r.json()
        pages += 1
        assert fc["numberMatched"] == len(ALL) and fc["numberReturned"] == len(fc["features"])
        assert fc["numberReturned"] <= 2
        seen += [f["id"] for f in fc["features"]]
        following = [link["href"] for link in fc.get("links", []) if link["rel"] == "next"]
        if following:
            assert r.headers["link"] == f'<{following[0]}>; rel="next"'
            assert "geometry=latest" in following[0]  # the other parameters are kept
        else:
            assert "link" not in r.headers
        url = following[0] if following else None
    assert seen == order  # every case once, in the list's order
    assert pages == -(-len(ALL) // 2)
    # the default page is bounded, and a page past the end is empty
    assert client.get("/cases.geojson?limit=1001", headers=auth["analyst"]).status_code == 422
    past = client.get(f"/cases.geojson?offset={len(ALL)}", headers=auth["analyst"]).json()
    assert past["features"] == [] and past["numberMatched"] == len(ALL) and "links" not in past


# --- transitions ------------------------------------------------------------------------------


def post(client, case_id, to, headers, comment=None):
    return client.post(
        f"/cases/{case_id}/transitions", json={"to": to, "comment": comment}, headers=headers
    )


def test_the_whole_lifecycle_by_role(client, auth, ids, db):
    z1 = ids["z1"]
    # issuing to the county is the analyst's: the officer may not, the viewer may not
    r = post(client, z1, "verifying", auth["officer"])
    assert r.status_code == 403
    assert "officer may not move" in r.json()["detail"]
    assert post(client, z1, "verifying", auth["viewer"]).status_code == 403
    assert state_of(db, z1) == "issued"
    r = post(client, z1, "verifying", auth["analyst"], "sent to Zhouzhi")
    assert r.status_code == 200
    assert r.json()["state"] == "verifying"
    # the officer sees its verdict buttons now
    assert r.json()["allowed_transitions"] == ["compliant", "false_alarm", "violation"]
    r = post(client, z1, "violation", auth["officer"], "quarry face confirmed on site")
    assert r.status_code == 200 and r.json()["state"] == "violation"
    assert r.json()["verified_at"] is not None
    r = post(client, z1, "rectifying", auth["officer"])
    assert r.status_code == 200 and r.json()["state"] == "rectifying"
    # closing a rectified violation is signed off by an analyst
    r = post(client, z1, "closed", auth["officer"])
    assert r.status_code == 403
    assert post(client, z1, "closed", auth["analyst"], "restored").json()["state"] == "closed"
    # a final state goes nowhere: 409, whoever asks
    r = post(client, z1, "verifying", auth["analyst"])
    assert r.status_code == 409
    assert "closed is a final state" in r.json()["detail"]
    with db.session() as s:
        events = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == z1).order_by(CaseEvent.id)
        ).all()
    moves = [
        (e.actor, e.from_state, e.to_state, e.comment) for e in events if e.kind == "transition"
    ]
    assert moves == [
        ("ana.lyst", "issued", "verifying", "sent to Zhouzhi"),
        ("zhou.officer", "verifying", "violation", "quarry face confirmed on site"),
        ("zhou.officer", "violation", "rectifying", None),
        ("ana.lyst", "rectifying", "closed", "restored"),
    ]
    assert all(e.at == API_NOW for e in events if e.kind == "transition")


def test_a_transition_the_lifecycle_forbids_is_409_for_every_role(client, auth, ids, db):
    z2 = ids["z2"]
    for role in ("analyst", "officer"):
        r = post(client, z2, "closed", auth[role])
        assert r.status_code == 409, role
        assert "from issued it can go to verifying" in r.json()["detail"]
    assert state_of(db, z2) == "issued"


def test_officer_verdicts(client, auth, ids, db):
    for key, verdict in (("z2", "compliant"), ("z3", "false_alarm")):
        assert post(client, ids[key], "verifying", auth["analyst"]).status_code == 200
        r = post(client, ids[key], verdict, auth["officer"], "seen in the field")
        assert r.status_code == 200
        assert state_of(db, ids[key]) == verdict
        assert r.json()["allowed_transitions"] == []


# --- assignment -------------------------------------------------------------------------------


def test_analyst_reassigns_and_visibility_follows(client, auth, ids, db):
    z4 = ids["z4"]
    r = client.post(
        f"/cases/{z4}/assign",
        json={"county": "Huyi", "comment": "across the line"},
        headers=auth["analyst"],
    )
    assert r.status_code == 200
    assert r.json()["assigned_county"] == "Huyi" and r.json()["county"] == "Zhouzhi"
    assert client.get(f"/cases/{z4}", headers=auth["officer"]).status_code == 404
    assert client.get(f"/cases/{z4}", headers=auth["huyi"]).status_code == 200
    events = client.get(f"/cases/{z4}", headers=auth["huyi"]).json()["events"]
    assert events[-1]["kind"] == "assigned" and events[-1]["actor"] == "ana.lyst"
    assert "Zhouzhi → Huyi" in events[-1]["comment"]


def test_a_reassignment_made_meanwhile_is_not_overwritten(client, auth, ids, db):
    """Two analysts saw z4 in Zhouzhi and hand it on at once: one wins, the other gets 409."""
    z4 = ids["z4"]
    barrier = threading.Barrier(2)

    def hand_on(county: str) -> int:
        barrier.wait()
        body = {"county": county, "expected_county": "Zhouzhi"}
        return client.post(f"/cases/{z4}/assign", json=body, headers=auth["analyst"]).status_code

    with ThreadPoolExecutor(2) as pool:
        counties = ("Huyi", "Chang'an")
        codes = dict(zip(counties, pool.map(hand_on, counties), strict=True))
    assert sorted(codes.values()) == [200, 409], codes
    winner = next(county for county, code in codes.items() if code == 200)
    r = client.get(f"/cases/{z4}", headers=auth["analyst"])
    assert r.json()["assigned_county"] == winner
    assert [e["kind"] for e in r.json()["events"]].count("assigned") == 1
    # a stale view is refused with what the case is now; an up-to-date one goes through
    stale = client.post(
        f"/cases/{z4}/assign",
        json={"county": "Zhouzhi", "expected_county": "Zhouzhi"},
        headers=auth["analyst"],
    )
    assert stale.status_code == 409 and f"assigned to {winner} now" in stale.json()["detail"]
    fresh = client.post(
        f"/cases/{z4}/assign",
        json={"county": "Zhouzhi", "expected_county": winner},
        headers=auth["analyst"],
    )
    assert fresh.status_code == 200 and fresh.json()["assigned_county"] == "Zhouzhi"


def test_only_analysts_assign_and_final_cases_stay(client, auth, ids):
    z5 = ids["z5"]
    for role in ("officer", "viewer"):
        r = client.post(f"/cases/{z5}/assign", json={"county": "Huyi"}, headers=auth[role])
        assert r.status_code == 403, role
    post(client, z5, "verifying", auth["analyst"])
    post(client, z5, "false_alarm", auth["analyst"])
    r = client.post(f"/cases/{z5}/assign", json={"county": "Huyi"}, headers=auth["analyst"])
    assert r.status_code == 409
    assert "final case is not reassigned" in r.json()["detail"]
    r = client.post("/cases/999999/assign", json={"county": "Huyi"}, headers=auth["analyst"])
    assert r.status_code == 404


# --- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("{not json", "application/json", "body is not valid JSON"),
        ("", "application/json", "JSON body is required"),
        ('{"comment": "x"}', "application/json", "body.to: Field required"),
        ('{"to": "demolished"}', "application/json", "body.to: Input should be 'issued'"),
        ('{"to": 3}', "application/json", "body.to: Input should be"),
        (
            '{"to": "verifying", "actor": "someone else"}',
            "application/json",
            "body.actor: Extra inputs are not permitted",
        ),
        ('{"to": "verifying", "comment": 5}', "application/json", "body.comment"),
        ('["verifying"]', "application/json", "body"),
    ],
)
def test_malformed_transition_bodies_are_422_with_a_clear_message(
    client, auth, ids, db, body, content_type, message
):
    r = client.post(
        f"/cases/{ids['z1']}/transitions",
        content=body,
        headers={**auth["analyst"], "Content-Type": content_type},
    )
    assert r.status_code == 422, r.text
    out = r.json()
    assert message in out["detail"], out["detail"]
    assert out["errors"] and all("loc" in e and "msg" in e for e in out["errors"])
    assert state_of(db, ids["z1"]) == "issued"  # nothing happened


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("bbox=1,2,3", "query.bbox: must be west,south,east,north: four numbers in degrees"),
        ("bbox=10,0,5,1", "query.bbox: '10,0,5,1': need -180 <= west <= east <= 180"),
        ("bbox=0,0,1,95", "and -90 <= south <= north <= 90"),
        ("bbox=a,b,c,d", "query.bbox: must be west,south,east,north"),
        ("bbox=nan,0,1,1", "query.bbox: must be west,south,east,north"),
        ("county=a%00b", "query.county.0: must not contain NUL characters"),
        ("state=demolished", "query.state.0: Input should be"),
        ("limit=0", "query.limit: Input should be greater than or equal to 1"),
        ("limit=5000", "query.limit: Input should be less than or equal to 1000"),
        ("offset=-1", "query.offset"),
        ("detected_from=2025-13-01", "query.detected_from"),
        ("detected_from=2025-06-10&detected_to=2025-06-01", "is before detected_from"),
    ],
)
def test_malformed_queries_are_422_with_a_clear_message(client, auth, query, message):
    for path in ("/cases", "/cases.geojson"):
        if "limit" in query or "offset" in query:
            if path != "/cases":
                continue
        r = client.get(f"{path}?{query}", headers=auth["analyst"])
        assert r.status_code == 422, (path, r.text)
        assert message in r.json()["detail"], r.json()["detail"]


def test_malformed_ids_and_assign_bodies_are_422(client, auth):
    assert client.get("/cases/abc", headers=auth["analyst"]).status_code == 422
    assert client.get("/cases/0", headers=auth["analyst"]).status_code == 422
    for county in ("   ", "a\x00b"):
        r = client.post("/cases/1/assign", json={"county": county}, headers=auth["analyst"])
        assert r.status_code == 422
        assert r.json()["detail"] == "body.county: must not be blank nor contain NUL characters"


# --- monthly report ---------------------------------------------------------------------------


def test_monthly_report_json_and_csv(client, auth, ids):
    # the cases first detected in June (every one here): two verdicts in Zhouzhi, none in Huyi
    for key, verdict in (("z1", "violation"), ("z2", "false_alarm")):
        post(client, ids[key], "verifying", auth["analyst"])
        assert post(client, ids[key], verdict, auth["officer"]).status_code == 200
    r = client.get("/reports/monthly?month=2025-06", headers=auth["analyst"])
    assert r.status_code == 200
    report = r.json()
    assert report["month"] == "2025-06"
    assert report["start"].startswith("2025-06-01T00:00:00")
    rows = {row["county"]: row for row in report["counties"]}
    assert set(rows) == {"Zhouzhi", "Huyi"}
    # every case was issued at NOW (2025-06-01)
    assert rows["Zhouzhi"]["issued"] == len(ZHOUZHI) and rows["Huyi"]["issued"] == 2
    assert rows["Zhouzhi"]["verified"] == 2 and rows["Zhouzhi"]["verified_on_time"] == 2
    assert rows["Zhouzhi"]["closed"] == 1  # false alarm is final; a violation is not
    assert rows["Zhouzhi"]["violations"] == 1 and rows["Zhouzhi"]["rectified"] == 0
    assert rows["Zhouzhi"]["rank"] == 1 and rows["Huyi"]["rank"] is None

    officer = client.get("/reports/monthly?month=2025-06", headers=auth["officer"]).json()
    assert [row["county"] for row in officer["counties"]] == ["Zhouzhi"]
    one = client.get("/reports/monthly?month=2025-06&county=Huyi", headers=auth["viewer"]).json()
    assert [row["county"] for row in one["counties"]] == ["Huyi"]
    other = client.get("/reports/monthly?month=2025-06&county=Huyi", headers=auth["officer"])
    assert other.json()["counties"] == []  # a county filter cannot widen an officer's scope

    r = client.get("/reports/monthly.csv?month=2025-06", headers=auth["analyst"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="report-2025-06.csv"' in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["county"] for row in table} == {"Zhouzhi", "Huyi"}
    zhouzhi = next(row for row in table if row["county"] == "Zhouzhi")
    assert zhouzhi["verified"] == "2" and zhouzhi["on_time_share"] == "1.000"
    assert zhouzhi["rank"] == "1" and zhouzhi["month"] == "2025-06"

    empty = client.get("/reports/monthly?month=2024-01", headers=auth["analyst"]).json()
    assert empty["counties"] == []
    for bad in ("2025-7", "2025-13", "july", "0000-01"):
        r = client.get(f"/reports/monthly?month={bad}", headers=auth["analyst"])
        assert r.status_code == 422
        assert r.json()["detail"] == "query.month: must be a month YYYY-MM, e.g. 2025-06"
    assert client.get("/reports/monthly", headers=auth["analyst"]).status_code == 422


# --- the review page's session cookie ---------------------------------------------------------


def test_login_sets_an_httponly_cookie_and_cookie_writes_need_the_csrf_header(
    client, seeded, ids, db
):
    r = client.post("/login", json={"token": "cdt_" + "B" * 43})
    assert r.status_code == 401
    r = client.post("/login", json={"token": seeded.tokens["analyst"]})
    assert r.status_code == 200 and r.json()["role"] == "analyst"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert client.get("/cases").status_code == 200  # the cookie authenticates reads
    z1 = ids["z1"]
    r = client.post(f"/cases/{z1}/transitions", json={"to": "verifying"})
    assert r.status_code == 403 and "X-Changedetect-CSRF" in r.json()["detail"]
    assert state_of(db, z1) == "issued"
    r = client.post(
        f"/cases/{z1}/transitions", json={"to": "verifying"}, headers={"X-Changedetect-CSRF": "1"}
    )
    assert r.status_code == 200 and state_of(db, z1) == "verifying"
    assert client.post("/logout").status_code == 204
    assert client.get("/cases").status_code == 401


def test_review_page_is_self_contained(client):
    r = client.get("/review")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src 'self'" in csp
    # scripts and styles from the app's own files only: nothing inline can run or restyle
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "nonce" not in csp and "unsafe-inline" not in csp
    assert "<style" not in html and " style=" not in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    # the page tells its script the CSRF header's name
    assert 'data-csrf-header="X-Changedetect-CSRF"' in html
    # nothing from elsewhere: no absolute URLs to load, no web fonts, no markup from strings
    files = {url: client.get(url) for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', html)}
    assert {url.split("?")[0] for url in files} >= {"/static/review.css", "/static/review.js"}
    assert "http://" not in html and "https://" not in html
    for url, file in files.items():
        assert file.status_code == 200 and "@font-face" not in file.text, url
        if "/vendor/" in url:
            # a library's comments and links name its sites; what it loads is only relative
            assert not re.search(r"""url\(\s*['"]?(https?:)?//""", file.text), url
        else:
            assert "http://" not in file.text and "https://" not in file.text, url
            assert "innerHTML" not in file.text, url


def test_the_review_page_files_are_served_fingerprinted_and_not_sniffed(client):
    html = client.get("/review").text
    url = re.search(r'src="(/static/review\.js\?v=[0-9a-f]{12})"', html).group(1)
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["x-content-type-options"] == "nosniff"
    # that URL always means these bytes: cached for good; without it, checked every time
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    plain = client.get("/static/review.js")
    assert plain.headers["cache-control"] == "no-cache" and plain.content == r.content
    stale = client.get("/static/review.js?v=000000000000")
    assert stale.headers["cache-control"] == "no-cache"
    again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == r.headers["cache-control"]
    css = client.get(re.search(r'href="(/static/review\.css[^"]*)"', html).group(1))
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    # only the static folder: no way out of it, no other method
    for path in ("/static/../page.py", "/static/%2e%2e/page.py", "/static/missing.js"):
        assert client.get(path).status_code == 404, path
    assert client.post("/static/review.js").status_code == 405


def test_sites_seed_matches_the_ledger(ids):
    assert set(ids) == {k for k, *_ in SITES} | {"evil"}


def test_openapi_documents_models_and_examples(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/cases",
        "/cases.geojson",
        "/cases/{case_id}",
        "/cases/{case_id}/transitions",
        "/cases/{case_id}/assign",
        "/reports/monthly",
        "/reports/monthly.csv",
        "/health",
    ):
        assert path in paths, path
    transition = paths["/cases/{case_id}/transitions"]["post"]
    assert set(transition["responses"]) >= {"200", "401", "403", "404", "409", "422"}
    schemas = spec["components"]["schemas"]
    assert schemas["TransitionIn"]["examples"] == [
        {"to": "violation", "comment": "quarry face confirmed"}
    ]
    assert "examples" in schemas["CaseOut"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
