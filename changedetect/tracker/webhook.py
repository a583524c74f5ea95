"""Webhook hand-off: new and changed cases POSTed as signed JSON to a configured URL.

Design: a **transactional outbox**. Events are rows of ``webhook_outbox``, written in the same
transaction as the change they describe (an ingest, a transition, a reassignment), so an event
exists if and only if its change was committed. Delivery is a separate, bounded step:

- :func:`deliver_pending` sends what is due, oldest first, one request at a time with a short
  timeout, and stops when its time budget (``WebhookConfig.budget_s``) is spent, whatever the
  receiver does. A failed event is retried with exponential backoff (``backoff_base_s`` doubling,
  capped at ``backoff_max_s``, with jitter); undelivered events simply stay in the outbox for the
  next pass — the next nightly run, or the API server's background :class:`WebhookSender`. After
  ``max_attempts`` failures an event is parked as *dead* (kept, no longer retried automatically;
  :func:`requeue_dead` re-arms them).
- The nightly run calls :func:`ingest_and_hand_off`: ingest + enqueue in one transaction, then
  one bounded delivery pass. A dead receiver therefore costs the run at most ``budget_s``
  seconds and never fails it.
- Events of one case are delivered in order: a case's later event waits while an earlier one
  is still pending. Delivery is at-least-once: receivers deduplicate on the ``webhook-id``
  header (the event's ``event_id``, the same on every retry). Concurrent senders claim an event
  with a short lease first, so two senders rarely post the same one.

Requests follow the **Standard Webhooks** scheme (:mod:`.webhook_signature`): ``webhook-id``,
``webhook-timestamp`` (this attempt, Unix seconds) and ``webhook-signature`` (``v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">``), so a captured request cannot be replayed once the
receiver's tolerance (5 minutes) has passed. The body is stored as the exact bytes signed; each
attempt signs them afresh with its own timestamp. Receivers may only be https (plain http is
refused except on loopback: 127.0.0.0/8, ::1, localhost), so bodies are not readable in transit.

The secret (``whsec_<base64>``, see :func:`new_secret`) comes from ``$CHANGEDETECT_WEBHOOK_SECRET``
or from the file named by ``$CHANGEDETECT_WEBHOOK_SECRET_FILE`` (a mounted secret), never from a
command line. Two secrets, space-separated (``"whsec_new whsec_old"``), sign every request with
both while a receiver moves from the old to the new. The secret is never logged, never stored in
the database and hidden from ``repr``.

A receiver checks each request with :func:`verify` (re-exported from
:mod:`.webhook_signature`) and answers 2xx only when it passes::

    from changedetect.tracker.webhook import WebhookVerificationError, verify

    try:
        event_id = verify(raw_body, headers, secret)  # tolerance_s=300 by default
    except WebhookVerificationError:
        return 401
    if seen_before(event_id):  # a retry, or a replay inside the window
        return 200
    event = json.loads(raw_body)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    and_,
    exists,
    select,
    update,
)
from sqlalchemy import func as sqlfunc
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from ..errors import ConfigError
from .clock import utc_now
from .db import TrackerDB
from .ingest import IngestReport, ingest
from .models import Base, Case, UTCDateTime
from .queries import summarize
from .webhook_signature import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    new_secret,
    sign,
    signed_headers,
    signing_keys,
    verify,
)

log = logging.getLogger("changedetect.tracker.webhook")

URL_ENV_VAR = "CHANGEDETECT_WEBHOOK_URL"
SECRET_ENV_VAR = "CHANGEDETECT_WEBHOOK_SECRET"
#: Names a file holding the secret instead (a mounted secret keeps it out of the environment).
SECRET_FILE_ENV_VAR = "CHANGEDETECT_WEBHOOK_SECRET_FILE"
#: Format version of the JSON body (bump on incompatible changes).
PAYLOAD_VERSION = 1


class OutboxEvent(Base):
    """One event waiting for (or done with) delivery to the webhook."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_pending", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    #: The exact JSON bytes that are signed and sent.
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: A sender that claimed the event owns it until then (then another may retry it).
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    dead_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


def shown_url(url: str) -> str:
    """``url`` fit for messages and logs: any user, password or query (a receiver may take an
    access key there) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[": nothing in it can be told apart safely
        return "<unparseable URL>"
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        netloc = "***@" + netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="***" if parts.query else "").geturl()


def _is_loopback(parts: SplitResult) -> bool:
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_receiver_url(url: str) -> None:
    """Refuse a receiver URL that would send cases in the clear: https only, except a receiver
    on this machine (127.0.0.0/8, ::1, localhost), whose traffic never leaves it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a malformed port raises here, not on the first request
    except ValueError as exc:
        raise ConfigError(f"webhook URL {shown_url(url)!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook URL {shown_url(url)!r} is not an https URL")
    if parts.scheme == "http" and not _is_loopback(parts):
        raise ConfigError(
            f"webhook URL {shown_url(url)!r} is plain http: case data would travel unencrypted; "
            "use https (http is accepted only for a receiver on loopback: 127.0.0.0/8, ::1, "
            "localhost)"
        )


def _secret_from_file(path: str) -> str:
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"cannot read the webhook secret file {path} (${SECRET_FILE_ENV_VAR}): {reason}"
        ) from None
    if not secret:
        raise ConfigError(f"the webhook secret file {path} (${SECRET_FILE_ENV_VAR}) is empty")
    return secret


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to deliver (the secret never shows in ``repr`` or logs)."""

    url: str
    """The receiver's URL: https (http only on loopback)."""
    secret: str = field(repr=False)
    """``whsec_<base64>`` signing secret, or several space-separated while one is rotated (each
    request is then signed with each); from ``$CHANGEDETECT_WEBHOOK_SECRET`` or the file of
    ``$CHANGEDETECT_WEBHOOK_SECRET_FILE``, never from a file in the repo or a command line."""
    timeout_s: float = 5.0
    """Connect and read timeout of one request."""
    budget_s: float = 20.0
    """Longest one delivery pass may take; what is left over waits for the next pass."""
    backoff_base_s: float = 2.0
    """Delay before the first retry; doubles with every failure ..."""
    backoff_max_s: float = 3600.0
    """... up to this."""
    max_attempts: int = 25
    """Failures after which an event is parked as dead (about a day at the default backoff)."""
    batch: int = 100
    """Events claimed per database round trip."""

    def __post_init__(self) -> None:
        check_receiver_url(self.url)
        signing_keys(self.secret)  # a malformed secret fails here, not on every request
        if self.timeout_s <= 0 or self.budget_s <= 0:
            raise ConfigError("webhook timeout_s and budget_s must be positive")
        if self.max_attempts < 1:
            raise ConfigError("webhook max_attempts must be at least 1")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> WebhookConfig | None:
        """The webhook of ``$CHANGEDETECT_WEBHOOK_URL`` with its secret from
        ``$CHANGEDETECT_WEBHOOK_SECRET`` or ``$CHANGEDETECT_WEBHOOK_SECRET_FILE``; None when no
        URL is set."""
        env = os.environ if environ is None else environ
        url = (env.get(URL_ENV_VAR) or "").strip()
        if not url:
            return None
        secret = (env.get(SECRET_ENV_VAR) or "").strip()
        secret_file = (env.get(SECRET_FILE_ENV_VAR) or "").strip()
        if secret and secret_file:
            raise ConfigError(
                f"both ${SECRET_ENV_VAR} and ${SECRET_FILE_ENV_VAR} are set: set only one, "
                "so it is clear which secret signs the webhook"
            )
        if secret_file:
            secret = _secret_from_file(secret_file)
        if not secret:
            raise ConfigError(
                f"${URL_ENV_VAR} is set but ${SECRET_ENV_VAR} is not (nor "
                f"${SECRET_FILE_ENV_VAR}): every webhook request is signed, set the shared "
                "secret too"
            )
        return cls(url=url, secret=secret, **overrides)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (jittered ±20 %)."""
        base = min(self.backoff_base_s * 2 ** max(attempts - 1, 0), self.backoff_max_s)
        return base * random.uniform(0.8, 1.2)


# --- enqueueing (inside the caller's transaction) ---------------------------------------------


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def enqueue_case_event(
    session: Session,
    case_id: int,
    kind: str,
    *,
    now: dt.datetime,
    actor: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> OutboxEvent:
    """Add an event about ``case_id`` (its current summary) to the outbox, in this transaction.

    ``kind`` is e.g. ``case.created``, ``case.updated``, ``case.transitioned``,
    ``case.assigned``; ``details`` adds kind-specific fields (clue ids, from/to states ...).
    """
    case = session.get(Case, case_id)
    if case is None:
        raise ValueError(f"no case {case_id} to announce")
    event_id = str(uuid.uuid4())
    payload = {
        "version": PAYLOAD_VERSION,
        "event_id": event_id,
        "event": kind,
        "occurred_at": now.isoformat(),
        "actor": actor,
        "case": summarize(case, now=now).to_dict(),
        **dict(details or {}),
    }
    event = OutboxEvent(
        event_id=event_id,
        case_id=case_id,
        kind=kind,
        body=_encode(payload),
        created_at=now,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(event)
    session.flush()
    return event


def enqueue_ingest(
    session: Session, report: IngestReport, *, now: dt.datetime, actor: str = "ingest"
) -> list[OutboxEvent]:
    """One event per case an ingest created or grew (``case.created`` / ``case.updated``).

    Clues that were already known (``unchanged``) or only re-saw a closed case
    (``suppressed``) change nothing anyone has to act on, so they are not announced.
    """
    per_case: dict[int, dict[str, Any]] = {}
    for outcome in report.outcomes:
        if outcome.action not in ("created", "updated") or outcome.case_id is None:
            continue
        entry = per_case.setdefault(outcome.case_id, {"created": False, "clue_ids": []})
        entry["created"] |= outcome.action == "created"
        entry["clue_ids"].append(outcome.clue_id)
        if outcome.linked_case_id is not None:
            entry["linked_case_id"] = outcome.linked_case_id
    events = []
    for case_id, entry in sorted(per_case.items()):
        kind = "case.created" if entry.pop("created") else "case.updated"
        events.append(
            enqueue_case_event(session, case_id, kind, now=now, actor=actor, details=entry)
        )
    return events


# --- delivery ---------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one :func:`deliver_pending` pass did."""

    delivered: int = 0
    failed: int = 0
    """Failed attempts (an event retried within the pass counts each time)."""
    dead: int = 0
    """Events parked as dead in this pass."""
    pending: int = 0
    """Events still waiting after the pass (not delivered, not dead)."""
    elapsed_s: float = 0.0

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"webhook: {self.delivered} delivered, {self.failed} failed attempts, "
            f"{self.dead} parked, {self.pending} pending ({self.elapsed_s:.1f} s)"
        )


def _ready(now: dt.datetime) -> list[Any]:
    """Conditions of an event a sender may take up (time aside): live, unleased, first of its
    case still to go."""
    earlier = aliased(OutboxEvent)
    blocked = exists().where(  # an older event of the same case still to go: keep order
        and_(
            earlier.case_id == OutboxEvent.case_id,
            earlier.id < OutboxEvent.id,
            earlier.delivered_at.is_(None),
            earlier.dead_at.is_(None),
        )
    )
    return [
        OutboxEvent.delivered_at.is_(None),
        OutboxEvent.dead_at.is_(None),
        (OutboxEvent.lease_until.is_(None)) | (OutboxEvent.lease_until < now),
        ~blocked,
    ]


def _due(db: TrackerDB, now: dt.datetime, limit: int) -> list[Any]:
    with db.session() as session:
        return list(
            session.execute(
                select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.body, OutboxEvent.attempts)
                .where(*_ready(now), OutboxEvent.next_attempt_at <= now)
                .order_by(OutboxEvent.id)
                .limit(limit)
            )
        )


def _next_due(db: TrackerDB, now: dt.datetime) -> dt.datetime | None:
    """When the next event this sender could take up falls due (None: nothing to wait for)."""
    with db.session() as session:
        return session.scalar(select(sqlfunc.min(OutboxEvent.next_attempt_at)).where(*_ready(now)))


def _claim(db: TrackerDB, event_id: int, now: dt.datetime, lease_s: float) -> bool:
    """Take a lease on one event; False when another sender holds it or it is done."""
    with db.write() as session:
        result = session.execute(
            update(OutboxEvent)
            .where(
                OutboxEvent.id == event_id,
                OutboxEvent.delivered_at.is_(None),
                OutboxEvent.dead_at.is_(None),
                (OutboxEvent.lease_until.is_(None)) | (OutboxEvent.lease_until < now),
            )
            .values(lease_until=now + dt.timedelta(seconds=lease_s))
        )
        return result.rowcount == 1


def _post(
    http: requests.Session, config: WebhookConfig, event_id: str, body: bytes, timeout: float
) -> str | None:
    """POST one event; None on a 2xx answer, else a short reason (no secret in it)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "changedetect-tracker-webhook",
        # signed now: the timestamp is this attempt's, so a receiver can refuse stale copies
        **signed_headers(event_id, body, config.secret, timestamp=int(utc_now().timestamp())),
    }
    try:
        response = http.post(
            config.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as exc:
        return _scrub(f"{type(exc).__name__}: {exc}", config)[:300]
    if 200 <= response.status_code < 300:
        return None
    return _scrub(f"HTTP {response.status_code}: {response.text[:200]}", config)


def _scrub(message: str, config: WebhookConfig) -> str:
    """An error message fit for logs and the outbox: no secret, no URL query or credentials
    (a receiver may take an access key in its URL; connection errors repeat the URL)."""
    parts = urlsplit(config.url)
    for private in (
        config.secret,
        *config.secret.split(),
        parts.query,
        parts.username,
        parts.password,
    ):
        if private:
            message = message.replace(private, "***")
    return message


def _record(
    db: TrackerDB,
    event_id: int,
    attempts: int,
    error: str | None,
    config: WebhookConfig,
) -> bool:
    """Store an attempt's result; True if the event is now parked as dead."""
    now = utc_now()
    values: dict[str, Any] = {"lease_until": None, "attempts": attempts + 1}
    dead = False
    if error is None:
        values.update(delivered_at=now, last_error=None)
    else:
        values["last_error"] = error
        if attempts + 1 >= config.max_attempts:
            values["dead_at"] = now
            dead = True
        else:
            values["next_attempt_at"] = now + dt.timedelta(seconds=config.backoff(attempts + 1))
    with db.write() as session:
        session.execute(update(OutboxEvent).where(OutboxEvent.id == event_id).values(**values))
    return dead


def pending_count(db: TrackerDB) -> int:
    """Events neither delivered nor dead."""
    with db.session() as session:
        return int(
            session.scalar(
                select(sqlfunc.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.delivered_at.is_(None), OutboxEvent.dead_at.is_(None))
            )
            or 0
        )


def deliver_pending(
    db: TrackerDB,
    config: WebhookConfig,
    *,
    http: requests.Session | None = None,
    stop: threading.Event | None = None,
    budget_s: float | None = None,
) -> DeliveryReport:
    """Deliver what is due, retrying with backoff, for at most ``budget_s`` seconds.

    Never raises for a receiver's failure: failures are recorded on the events, which stay in
    the outbox. Returns early when ``stop`` is set (the API server shutting down).
    """
    budget = config.budget_s if budget_s is None else budget_s
    started = time.monotonic()
    deadline = started + budget
    report = DeliveryReport()
    own_http = http is None
    http = http or requests.Session()
    # a lease outlives the longest request, so a slow receiver is not posted to twice
    lease_s = config.timeout_s * 2 + 5
    try:
        while not (stop is not None and stop.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            now = utc_now()
            due = _due(db, now, config.batch)
            if not due:
                next_due = _next_due(db, now)
                if next_due is None:
                    break
                wait = (next_due - utc_now()).total_seconds()
                if wait >= deadline - time.monotonic():
                    break  # the next retry falls after this pass: leave it for the next one
                if stop is not None:
                    if stop.wait(max(wait, 0.01)):
                        break
                else:
                    time.sleep(max(wait, 0.01))
                continue
            for row_id, event_id, body, attempts in due:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    break
                if not _claim(db, row_id, utc_now(), lease_s):
                    continue
                error = _post(http, config, event_id, body, min(config.timeout_s, remaining))
                if error is None:
                    report.delivered += 1
                else:
                    report.failed += 1
                    log.warning("webhook event %s not delivered: %s", event_id, error)
                if _record(db, row_id, attempts, error, config):
                    report.dead += 1
    finally:
        if own_http:
            http.close()
    report.pending = pending_count(db)
    report.elapsed_s = time.monotonic() - started
    log.info("%s", report.summary())
    return report


def requeue_dead(db: TrackerDB) -> int:
    """Re-arm every event parked as dead (after the receiver is fixed); returns how many."""
    now = utc_now()
    with db.write() as session:
        result = session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.dead_at.is_not(None), OutboxEvent.delivered_at.is_(None))
            .values(dead_at=None, attempts=0, next_attempt_at=now, lease_until=None)
        )
        return int(result.rowcount)


def ingest_and_hand_off(
    db: TrackerDB,
    clues: Any,
    *,
    webhook: WebhookConfig | None,
    deliver: bool = True,
    now: dt.datetime | None = None,
    **ingest_kwargs: Any,
) -> tuple[IngestReport, DeliveryReport | None]:
    """Ingest clues and, with a webhook, queue their new/changed cases and deliver (bounded).

    Each chunk of the ingest commits together with its outbox events. The delivery pass that
    follows lasts at most ``webhook.budget_s`` and never raises for the receiver: the ingest's
    result stands whatever happens to the hand-off.
    """
    when = utc_now(now)

    def enqueue(session: Session, chunk: IngestReport) -> None:
        enqueue_ingest(session, chunk, now=when, actor=ingest_kwargs.get("actor", "ingest"))

    on_chunk = enqueue if webhook is not None else None
    report = ingest(db, clues, now=when, on_chunk=on_chunk, **ingest_kwargs)
    if webhook is None or not deliver:
        return report, None
    try:
        return report, deliver_pending(db, webhook)
    except Exception as exc:  # the database, not the receiver: still never fail the ingest
        log.warning("webhook delivery pass failed (%s); events stay queued", type(exc).__name__)
        return report, None


def escalate_and_hand_off(
    db: TrackerDB,
    *,
    webhook: WebhookConfig | None,
    now: dt.datetime | None = None,
    actor: str = "system",
) -> list[int]:
    """:func:`~changedetect.tracker.lifecycle.escalate_overdue`, announcing each newly
    escalated case (``case.escalated``) in the same transaction; delivered by the next pass."""
    from .lifecycle import escalate_overdue

    when = utc_now(now)

    def work(session: Session) -> list[int]:
        ids = escalate_overdue(session, now=when, actor=actor)
        if webhook is not None:
            for case_id in ids:
                enqueue_case_event(session, case_id, "case.escalated", now=when, actor=actor)
        return ids

    return db.run_write(work)


class WebhookSender:
    """A background thread delivering the outbox: woken by :meth:`notify`, else every
    ``interval_s``. For long-running processes (the API server); the nightly run uses
    :func:`ingest_and_hand_off` instead."""

    def __init__(self, db: TrackerDB, config: WebhookConfig, *, interval_s: float = 30.0) -> None:
        self.db = db
        self.config = config
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a daemon: it never keeps the process alive)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="changedetect-webhook", daemon=True
            )
            self._thread.start()

    def notify(self) -> None:
        """New events were committed: deliver soon."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the request in flight (at most ``timeout_s``) and wait up to ``timeout``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                deliver_pending(self.db, self.config, stop=self._stop)
            except Exception:  # a database hiccup: log it and try again next round
                log.exception("webhook sender pass failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()


def outbox_events(db: TrackerDB, *, case_ids: Iterable[int] | None = None) -> list[OutboxEvent]:
    """Outbox rows (oldest first), e.g. for inspection and tests."""
    with db.session() as session:
        stmt = select(OutboxEvent).order_by(OutboxEvent.id)
        if case_ids is not None:
            stmt = stmt.where(OutboxEvent.case_id.in_(list(case_ids)))
        return list(session.scalars(stmt))


__all__ = [
    "ID_HEADER",
    "SECRET_ENV_VAR",
    "SECRET_FILE_ENV_VAR",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "URL_ENV_VAR",
    "DeliveryReport",
    "OutboxEvent",
    "WebhookConfig",
    "WebhookSender",
    "WebhookVerificationError",
    "check_receiver_url",
    "deliver_pending",
    "enqueue_case_event",
    "escalate_and_hand_off",
    "enqueue_ingest",
    "ingest_and_hand_off",
    "new_secret",
    "outbox_events",
    "pending_count",
    "requeue_dead",
    "shown_url",
    "sign",
    "verify",
]
