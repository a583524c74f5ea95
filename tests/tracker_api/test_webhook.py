"""Webhook hand-off: Standard Webhooks signatures that cannot be replayed, https receivers,
retries with backoff, and a dead receiver that costs the nightly ingest a bounded time and loses
nothing."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import logging
import socket
import threading
import time
from contextlib import redirect_stdout

import pytest
from fastapi.testclient import TestClient
from werkzeug import Request, Response

from changedetect.errors import ConfigError
from changedetect.tracker.api import create_app
from changedetect.tracker.api.cli import add_api_commands
from changedetect.tracker.webhook import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfig,
    WebhookVerificationError,
    deliver_pending,
    enqueue_case_event,
    escalate_and_hand_off,
    ingest_and_hand_off,
    outbox_events,
    pending_count,
    requeue_dead,
    sign,
    verify,
)
from tests.factories import API_NOW, NOW, collection, feature, rect

SECRET = "whsec_Y2hhbmdlZGV0ZWN0IHdlYmhvb2sgdGVzdHMga2V5ISE="  # 32 bytes
OTHER_SECRET = "whsec_Y2hhbmdlZGV0ZWN0IHdlYmhvb2s6IGEgMm5kIGtleQ=="  # 31 bytes


def config(url: str, **kw) -> WebhookConfig:
    """Fast retries for tests: 0.2 s, 0.4 s, ..."""
    kw.setdefault("backoff_base_s", 0.2)
    kw.setdefault("timeout_s", 1.0)
    kw.setdefault("budget_s", 5.0)
    return WebhookConfig(url=url, secret=SECRET, **kw)


def night(prefix: str, *xs: float, day: str = "2025-07-01"):
    return collection(
        [
            feature(f"{prefix}-{i}", rect(x, 3000, 70), day, county="Zhouzhi")
            for i, x in enumerate(xs)
        ]
    )


class Receiver:
    """Records what arrives and answers with the next status of a script (then 200)."""

    def __init__(self, httpserver, statuses=()):
        self.statuses = list(statuses)
        self.received: list[tuple[bytes, dict[str, str]]] = []
        httpserver.expect_request("/hook", method="POST").respond_with_handler(self)
        self.url = httpserver.url_for("/hook")

    def __call__(self, request: Request) -> Response:
        # header names are case-insensitive: keep them as the spec spells them
        self.received.append((request.get_data(), {k.lower(): v for k, v in request.headers}))
        status = self.statuses.pop(0) if self.statuses else 200
        return Response("ok" if status == 200 else "try later", status=status)

    def bodies(self) -> list[dict]:
        return [json.loads(body) for body, _ in self.received]


def test_new_cases_are_posted_signed_with_the_case_as_json(db, httpserver):
    receiver = Receiver(httpserver)
    report, delivery = ingest_and_hand_off(
        db, night("w", 0, 400), webhook=config(receiver.url), now=NOW
    )
    assert report.created == 2
    assert delivery is not None and delivery.delivered == 2 and delivery.pending == 0
    assert len(receiver.received) == 2
    for body, headers in receiver.received:
        # the receiver's check: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the secret
        payload = json.loads(body)
        assert verify(body, headers, SECRET) == payload["event_id"] == headers[ID_HEADER]
        with pytest.raises(WebhookVerificationError, match="no v1 signature"):
            verify(body, headers, OTHER_SECRET)
        with pytest.raises(WebhookVerificationError, match="no v1 signature"):
            verify(body + b" ", headers, SECRET)
        assert headers["content-type"] == "application/json"
    payloads = receiver.bodies()
    assert [p["event"] for p in payloads] == ["case.created", "case.created"]
    assert {p["clue_ids"][0] for p in payloads} == {"w-0", "w-1"}
    ids = {o.clue_id: o.case_id for o in report.outcomes}
    for p in payloads:
        case = p["case"]
        assert case["id"] == ids[p["clue_ids"][0]]
        assert case["state"] == "issued" and case["assigned_county"] == "Zhouzhi"
        assert p["version"] == 1 and p["occurred_at"] == NOW.isoformat()
    # a changed case (a later night over the same ground) is announced as an update
    ingest_and_hand_off(db, night("w2", 10, day="2025-07-09"), webhook=config(receiver.url))
    last = receiver.bodies()[-1]
    assert last["event"] == "case.updated" and last["case"]["id"] == ids["w-0"]
    assert last["case"]["detections"] == 2
    # re-ingesting a night changes nothing and announces nothing
    before = len(receiver.received)
    ingest_and_hand_off(db, night("w", 0, 400), webhook=config(receiver.url), now=NOW)
    assert len(receiver.received) == before


def test_a_failed_delivery_is_retried_with_backoff_until_it_succeeds(db, httpserver):
    receiver = Receiver(httpserver, statuses=[500, 503])
    started = time.monotonic()
    _, delivery = ingest_and_hand_off(db, night("r", 0), webhook=config(receiver.url), now=NOW)
    assert delivery.delivered == 1 and delivery.failed == 2 and delivery.pending == 0
    assert len(receiver.received) == 3
    # the same bytes and webhook-id every time (receivers deduplicate on it), each attempt
    # signed with its own timestamp
    assert len({body for body, _ in receiver.received}) == 1
    assert len({h[ID_HEADER] for _, h in receiver.received}) == 1
    assert all(verify(body, h, SECRET) for body, h in receiver.received)
    # backoff: ~0.2 s then ~0.4 s (±20 %) between the attempts
    assert time.monotonic() - started >= 0.45
    [event] = outbox_events(db)
    assert event.delivered_at is not None and event.attempts == 3 and event.last_error is None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_receiver_costs_ingest_a_bounded_time_and_events_stay_queued(db):
    url = f"http://127.0.0.1:{closed_port()}/hook"
    started = time.monotonic()
    report, delivery = ingest_and_hand_off(
        db, night("d", 0, 400, 800), webhook=config(url, budget_s=1.5), now=NOW
    )
    elapsed = time.monotonic() - started
    assert report.created == 3  # the ingest stands
    assert elapsed < 5.0, elapsed  # budget + one ingest, with room for a loaded machine
    assert delivery.delivered == 0 and delivery.failed >= 3 and delivery.pending == 3
    events = outbox_events(db)
    assert len(events) == 3 and all(e.delivered_at is None and e.dead_at is None for e in events)
    assert all(e.attempts >= 1 and "ConnectionError" in (e.last_error or "") for e in events)


def test_a_hanging_receiver_is_cut_off_by_the_timeout_and_budget(db):
    # accepts connections and never answers
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        started = time.monotonic()
        _, delivery = ingest_and_hand_off(
            db, night("h", 0, 400), webhook=config(url, timeout_s=0.5, budget_s=1.2), now=NOW
        )
        assert time.monotonic() - started < 5.0
        assert delivery.delivered == 0 and delivery.pending == 2
        assert all("Timeout" in (e.last_error or "") for e in outbox_events(db) if e.attempts)
    finally:
        server.close()


def test_queued_events_go_out_on_the_next_pass_in_order(db, httpserver):
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    report, _ = ingest_and_hand_off(db, night("q", 0), webhook=config(dead, budget_s=0.3), now=NOW)
    case_id = report.outcomes[0].case_id
    # the case changes while the receiver is down: a second event for it queues behind
    ingest_and_hand_off(
        db, night("q2", 5, day="2025-07-05"), webhook=config(dead, budget_s=0.3), now=NOW
    )
    assert pending_count(db) == 2
    receiver = Receiver(httpserver)
    # back up: the first retry is due after its backoff; a pass long enough delivers both
    delivery = deliver_pending(db, config(receiver.url, budget_s=5.0))
    assert delivery.delivered == 2 and delivery.pending == 0
    assert [p["event"] for p in receiver.bodies()] == ["case.created", "case.updated"]
    assert {p["case"]["id"] for p in receiver.bodies()} == {case_id}


def test_events_are_parked_after_max_attempts_and_can_be_requeued(db, httpserver):
    receiver = Receiver(httpserver, statuses=[500, 500])
    _, delivery = ingest_and_hand_off(
        db, night("p", 0), webhook=config(receiver.url, max_attempts=2), now=NOW
    )
    assert delivery.dead == 1 and delivery.pending == 0
    assert outbox_events(db)[0].dead_at is not None
    assert requeue_dead(db) == 1
    delivery = deliver_pending(db, config(receiver.url))
    assert delivery.delivered == 1
    assert len(receiver.received) == 3


def test_api_transitions_are_handed_off_by_the_background_sender(db, auth, ids, httpserver):
    receiver = Receiver(httpserver)
    app = create_app(db, now=API_NOW, webhook=config(receiver.url), webhook_interval_s=60)
    with TestClient(app) as client:
        r = client.post(
            f"/cases/{ids['z1']}/transitions",
            json={"to": "verifying", "comment": "go"},
            headers=auth["analyst"],
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 5
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)  # the sender was notified: no 60 s wait
    [payload] = receiver.bodies()
    assert payload["event"] == "case.transitioned" and payload["actor"] == "ana.lyst"
    assert payload["from_state"] == "issued" and payload["to_state"] == "verifying"
    assert payload["case"]["state"] == "verifying" and payload["case"]["id"] == ids["z1"]
    assert verify(*receiver.received[0], SECRET) == payload["event_id"]
    # a refused transition queues nothing
    assert all(e.kind == "case.transitioned" for e in outbox_events(db))


def test_without_a_webhook_nothing_is_queued(db, client, auth, ids):
    report, delivery = ingest_and_hand_off(db, night("n", 0), webhook=None, now=NOW)
    assert report.created == 1 and delivery is None
    client.post(
        f"/cases/{ids['z1']}/transitions", json={"to": "verifying"}, headers=auth["analyst"]
    )
    assert outbox_events(db) == []


def test_config_from_the_environment_and_the_secret_stays_out_of_logs(db, caplog):
    assert WebhookConfig.from_env({}) is None
    with pytest.raises(ConfigError, match="CHANGEDETECT_WEBHOOK_SECRET is not"):
        WebhookConfig.from_env({"CHANGEDETECT_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    with pytest.raises(ConfigError, match="not in the Standard Webhooks format whsec_"):
        WebhookConfig(url="http://127.0.0.1:9/x", secret="short")
    with pytest.raises(ConfigError, match="not an https URL"):
        WebhookConfig(url="ftp://example/x", secret=SECRET)
    env = {
        "CHANGEDETECT_WEBHOOK_URL": f"http://127.0.0.1:{closed_port()}/hook",
        "CHANGEDETECT_WEBHOOK_SECRET": SECRET,
    }
    cfg = WebhookConfig.from_env(env, budget_s=1.0, backoff_base_s=0.1)
    assert SECRET not in repr(cfg)
    with caplog.at_level(logging.DEBUG, logger="changedetect"):
        ingest_and_hand_off(db, night("l", 0), webhook=cfg, now=NOW)
    assert caplog.records and SECRET not in caplog.text
    assert all(SECRET not in (e.last_error or "") for e in outbox_events(db))


def test_two_senders_at_once_deliver_each_event_once(db, httpserver):
    receiver = Receiver(httpserver)
    with db.write() as s:  # four events about four of the seeded cases
        for case_id in range(1, 5):
            enqueue_case_event(s, case_id, "case.created", now=NOW)
    cfg = config(receiver.url)
    threads = [threading.Thread(target=deliver_pending, args=(db, cfg)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [p["event_id"] for p in receiver.bodies()]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert pending_count(db) == 0


def test_escalations_are_announced_with_the_next_pass(db, ids, httpserver):
    receiver = Receiver(httpserver)
    cfg = config(receiver.url)
    later = NOW + dt.timedelta(days=31)  # past every seeded case's 30-day deadline
    escalated = escalate_and_hand_off(db, webhook=cfg, now=later)
    assert sorted(escalated) == sorted(ids.values())
    assert escalate_and_hand_off(db, webhook=cfg, now=later) == []  # already flagged
    assert deliver_pending(db, cfg).delivered == len(ids)
    payloads = receiver.bodies()
    assert {p["event"] for p in payloads} == {"case.escalated"}
    assert all(p["case"]["escalated"] and p["actor"] == "system" for p in payloads)


def test_a_key_in_the_receivers_url_stays_out_of_errors_and_logs(db, caplog):
    url = f"http://127.0.0.1:{closed_port()}/hook?key=do-not-log-this-9f8e7d"
    with caplog.at_level(logging.INFO, logger="changedetect"):
        ingest_and_hand_off(db, night("k", 0), webhook=config(url, budget_s=1.0), now=NOW)
    [event] = outbox_events(db)
    assert event.last_error and "do-not-log-this" not in event.last_error
    assert "do-not-log-this" not in caplog.text


def test_a_delivery_is_signed_for_its_attempt_and_refused_as_a_replay_later(db, httpserver):
    receiver = Receiver(httpserver)
    # an event queued long ago (the receiver was down for a year) ...
    with db.write() as s:
        queued = enqueue_case_event(s, 1, "case.created", now=NOW)
        event_id = queued.event_id
    before = int(time.time())
    assert deliver_pending(db, config(receiver.url)).delivered == 1
    [(body, headers)] = receiver.received
    # ... carries the time of the attempt, not of the event, so a receiver's window admits it
    sent_at = int(headers[TIMESTAMP_HEADER])
    assert before <= sent_at <= time.time()
    assert headers[ID_HEADER] == event_id and verify(body, headers, SECRET) == event_id
    assert headers[SIGNATURE_HEADER] == sign(event_id, sent_at, body, SECRET)
    # the same request captured and sent again after the window is refused
    with pytest.raises(WebhookVerificationError, match="stale or replayed"):
        verify(body, headers, SECRET, now=sent_at + 301)


def test_the_reference_library_verifies_a_delivery(db, httpserver):
    standardwebhooks = pytest.importorskip("standardwebhooks")
    receiver = Receiver(httpserver)
    ingest_and_hand_off(db, night("sw", 0), webhook=config(receiver.url), now=NOW)
    [(body, headers)] = receiver.received
    payload = standardwebhooks.Webhook(SECRET).verify(body, headers)
    assert payload["event"] == "case.created" and payload["event_id"] == headers[ID_HEADER]


def test_while_a_secret_is_rotated_each_request_is_signed_with_both(db, httpserver):
    receiver = Receiver(httpserver)
    rotating = WebhookConfig(url=receiver.url, secret=f"{OTHER_SECRET} {SECRET}", budget_s=5.0)
    ingest_and_hand_off(db, night("rot", 0), webhook=rotating, now=NOW)
    [(body, headers)] = receiver.received
    assert len(headers[SIGNATURE_HEADER].split()) == 2
    # a receiver still on the old secret and one already on the new both accept it
    assert verify(body, headers, SECRET) == verify(body, headers, OTHER_SECRET)
    assert OTHER_SECRET not in repr(rotating) and SECRET not in repr(rotating)


@pytest.mark.parametrize(
    "url",
    [
        "https://receiver.example.org/hook",
        "https://10.1.2.3:8443/hook",
        "http://127.0.0.1:9/hook",
        "http://127.20.30.40/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
        "http://LocalHost/hook",
    ],
)
def test_https_receivers_and_plain_http_on_loopback_are_accepted(url):
    assert WebhookConfig(url=url, secret=SECRET).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://receiver.example.org/hook",
        "http://10.1.2.3/hook",
        "http://0.0.0.0:9/hook",
        "http://localhost.receiver.example.org/hook",
        "http://127.0.0.1.receiver.example.org/hook",
    ],
)
def test_plain_http_receivers_off_this_machine_are_refused(url):
    with pytest.raises(ConfigError, match="is plain http: .* use https") as caught:
        WebhookConfig(url=url, secret=SECRET)
    assert url in str(caught.value)


def test_the_refusal_names_the_url_without_its_credentials():
    url = "http://hook-user:hunter2-pass@receiver.example.org:8080/in?key=k-9f8e7d"
    with pytest.raises(ConfigError) as caught:
        WebhookConfig(url=url, secret=SECRET)
    message = str(caught.value)
    assert "'http://***@receiver.example.org:8080/in?***'" in message
    assert "hunter2" not in message and "k-9f8e7d" not in message and "hook-user" not in message


def test_the_secret_may_come_from_a_file(tmp_path):
    url = "https://receiver.example.org/hook"
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(f"{SECRET}\n")
    env = {"CHANGEDETECT_WEBHOOK_URL": url, "CHANGEDETECT_WEBHOOK_SECRET_FILE": str(secret_file)}
    assert WebhookConfig.from_env(env).secret == SECRET
    with pytest.raises(ConfigError, match="set only one"):
        WebhookConfig.from_env({**env, "CHANGEDETECT_WEBHOOK_SECRET": SECRET})
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"cannot read the webhook secret file {missing}"):
        WebhookConfig.from_env({**env, "CHANGEDETECT_WEBHOOK_SECRET_FILE": str(missing)})
    secret_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        WebhookConfig.from_env(env)
    secret_file.write_text("a-plain-secret-of-the-old-kind-0123\n")
    with pytest.raises(ConfigError, match="whsec_") as caught:
        WebhookConfig.from_env(env)
    assert "old-kind" not in str(caught.value)


def test_the_cli_prints_a_new_secret_the_tracker_accepts():
    parser = argparse.ArgumentParser(prog="changedetect tracker")
    sub = parser.add_subparsers(dest="tracker_command", required=True)
    add_api_commands(sub, db_parent=argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["webhook", "secret"])
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.func(args) == 0
    secret = out.getvalue().strip()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert WebhookConfig(url="https://receiver.example.org/hook", secret=secret).secret == secret
