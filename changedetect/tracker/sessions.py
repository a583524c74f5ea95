"""The review page's login sessions, kept on the server.

``POST /login`` trades an API token for a session: a fresh random id (``cds_`` + 32 random
bytes) that the browser keeps in an HttpOnly cookie, while the database keeps only its SHA-256
(as for tokens: a random 256-bit key needs no slow hash), the user, the token it came from, and
two limits: an **idle** one (no request for ``idle`` ends it) and an **absolute** one (it ends
``lifetime`` after login whatever happens). Logging out deletes the row, so a copied cookie
stops working at once; so does revoking or rotating the token, expiring it, or disabling the
user, because every request checks the session's token and user as well as the session.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import ForeignKey, Integer, String, delete, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .auth import ApiToken, Principal, User, find_live_token, hash_token, live_token_clause
from .clock import utc_now
from .db import TrackerDB
from .errors import ConcurrencyError
from .models import Base, UTCDateTime
from .settings import TrackerSettings

SESSION_PREFIX = "cds_"
_SESSION_RE = re.compile(r"^cds_[A-Za-z0-9_-]{43}$")


class ApiSession(Base):
    """A logged-in review-page session: only the SHA-256 of its id is kept."""

    __tablename__ = "api_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The token the session was opened with: revoking it ends the session.
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: The absolute end, fixed at login.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions last."""

    idle: dt.timedelta = dt.timedelta(minutes=TrackerSettings.session_idle_minutes)
    lifetime: dt.timedelta = dt.timedelta(hours=TrackerSettings.session_max_hours)

    @classmethod
    def from_settings(cls, settings: TrackerSettings) -> SessionPolicy:
        """The policy of ``settings.session_idle_minutes`` and ``session_max_hours``."""
        return cls(
            idle=dt.timedelta(minutes=settings.session_idle_minutes),
            lifetime=dt.timedelta(hours=settings.session_max_hours),
        )

    @property
    def touch_every(self) -> dt.timedelta:
        """How stale ``last_seen_at`` may get before a request refreshes it: the idle limit
        stays accurate to this, and a busy page does not write on every request."""
        return min(self.idle / 10, dt.timedelta(minutes=1))


@dataclass(frozen=True)
class StartedSession:
    """A new session: its id (for the cookie; never stored), its user, and its absolute end."""

    session_id: str
    user: Principal
    expires_at: dt.datetime


def _looks_like_session(text: str) -> bool:
    return bool(_SESSION_RE.match(text))


def start_session(
    db: TrackerDB, token: str, *, policy: SessionPolicy, now: dt.datetime | None = None
) -> StartedSession | None:
    """Log in with an API token: a new session for its user, or None when the token is not
    live. Sessions that can no longer be used are deleted on the way."""
    now = utc_now(now)
    session_id = SESSION_PREFIX + secrets.token_urlsafe(32)

    def work(session: Session) -> StartedSession | None:
        found = find_live_token(session, token, now=now)
        if found is None:
            return None
        token_id, user = found
        _delete_dead(session, policy, now)
        expires = now + policy.lifetime
        session.add(
            ApiSession(
                session_hash=hash_token(session_id),
                user_id=user.user_id,
                token_id=token_id,
                created_at=now,
                last_seen_at=now,
                expires_at=expires,
            )
        )
        return StartedSession(session_id, user, expires)

    return db.run_write(work)


def resolve_session(
    db: TrackerDB, session_id: str, *, policy: SessionPolicy, now: dt.datetime | None = None
) -> Principal | None:
    """The user of a live session, or None (unknown, logged out, idle or past its end, its
    token revoked or expired, its user disabled). Refreshes the idle clock when it is stale."""
    if not _looks_like_session(session_id):
        return None
    now = utc_now(now)
    digest = hash_token(session_id)
    with db.session() as session:
        row = session.execute(
            select(
                ApiSession.session_hash,
                ApiSession.id,
                ApiSession.last_seen_at,
                User.id,
                User.name,
                User.role,
                User.county,
            )
            .join(User, User.id == ApiSession.user_id)
            .join(ApiToken, ApiToken.id == ApiSession.token_id)
            .where(
                ApiSession.session_hash == digest,
                ApiSession.expires_at > now,
                ApiSession.last_seen_at > now - policy.idle,
                live_token_clause(now),
            )
        ).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    if now - row[2] >= policy.touch_every:
        try:
            db.run_write(
                lambda s: s.execute(
                    update(ApiSession).where(ApiSession.id == row[1]).values(last_seen_at=now)
                )
            )
        except ConcurrencyError:
            # an ingest holds the write lock: the session is valid, so the request goes on and
            # a later request refreshes the idle clock (a read never fails for want of a write)
            pass
    return Principal(row[3], row[4], row[5], row[6])


def end_session(db: TrackerDB, session_id: str) -> bool:
    """Log out: delete the session (whether or not it was still live). True if there was one."""
    if not _looks_like_session(session_id):
        return False
    digest = hash_token(session_id)
    deleted = db.run_write(
        lambda s: s.execute(delete(ApiSession).where(ApiSession.session_hash == digest)).rowcount
    )
    return bool(deleted)


def _delete_dead(session: Session, policy: SessionPolicy, now: dt.datetime) -> None:
    """Delete sessions past either limit or whose token is revoked or expired."""
    dead_tokens = select(ApiToken.id).where(
        or_(ApiToken.revoked_at.is_not(None), ApiToken.expires_at <= now)
    )
    session.execute(
        delete(ApiSession).where(
            or_(
                ApiSession.expires_at <= now,
                ApiSession.last_seen_at <= now - policy.idle,
                ApiSession.token_id.in_(dead_tokens),
            )
        )
    )
