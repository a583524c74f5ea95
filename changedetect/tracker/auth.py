"""Who may do what in the tracker: users, roles, hashed API tokens and per-role transitions.

- A **user** has a role — ``analyst`` (every county; issues, closes, reassigns; every
  transition), ``officer`` (one county: sees only the cases assigned to it; field verdicts and
  rectification progress) or ``viewer`` (read-only, every county).
- A user holds any number of **API tokens**: ``cdt_`` + 32 random bytes (URL-safe base64). Only
  the SHA-256 of a token is stored. Every token expires (:data:`DEFAULT_TOKEN_LIFETIME` unless
  issued for longer or shorter), can be revoked, and can be rotated: replaced by a fresh token
  with the same label while the old value stops working. A token carries 256 bits of entropy, so a fast hash is
  enough (a slow KDF defends guessable passwords, not random keys) and lets every request be
  checked with one indexed look-up. The look-up is by hash — timing reveals nothing an attacker
  could steer, since they cannot choose the hash bytes — and the digests are compared again with
  :func:`hmac.compare_digest` so no code path compares secrets byte by byte.
- What a role may do to a case is :data:`ROLE_TRANSITIONS` (a subset of the lifecycle in
  :mod:`.states`) plus :func:`can_see` (officers: their county only).

The ORM models live here, on the tracker's declarative ``Base``; the tables are created by the
migration ``0002_users_and_tokens`` (token expiry: ``0005``). The review page's cookie sessions,
which hang off a token, are :mod:`.sessions`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    Integer,
    String,
    and_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from .clock import utc_now
from .db import TrackerDB
from .errors import TrackerError
from .models import Base, UTCDateTime
from .states import TRANSITIONS

T = TypeVar("T")

#: How long a token works unless issued with another lifetime: long enough that integrations are
#: not re-keyed every month, short enough that a forgotten token does not work for ever.
DEFAULT_TOKEN_LIFETIME = dt.timedelta(days=90)

Role = Literal["analyst", "officer", "viewer"]
ROLES: tuple[str, ...] = ("analyst", "officer", "viewer")

#: Prefix of every token: lets secret scanners and people recognise one, and tells a token
#: from other bearer credentials in logs.
TOKEN_PREFIX = "cdt_"
_TOKEN_RE = re.compile(r"^cdt_[A-Za-z0-9_-]{43}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")

#: Transitions each role may make, as (from, to) pairs; always a subset of the lifecycle (a
#: test holds it to that), and the lifecycle check still runs first on every transition.
#: Officers give the field verdict and report rectification; issuing a case to the county
#: (``issued → verifying``) and closing a rectified violation are the analysts' (provincial)
#: decisions, so the county that rectifies is not the one that signs the rectification off.
ROLE_TRANSITIONS: dict[str, frozenset[tuple[str, str]]] = {
    "analyst": frozenset((s, t) for s, targets in TRANSITIONS.items() for t in targets),
    "officer": frozenset(
        {
            ("verifying", "compliant"),
            ("verifying", "false_alarm"),
            ("verifying", "violation"),
            ("violation", "rectifying"),
        }
    ),
    "viewer": frozenset(),
}


class AuthError(TrackerError):
    """A user or token operation was refused (unknown user, bad role, bad name ...)."""


class User(Base):
    """Someone (or some system) allowed to use the tracker's HTTP API."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('analyst', 'officer', 'viewer')", name="role"),
        # an officer without a county would see nothing and could act on nothing
        CheckConstraint("role <> 'officer' OR county IS NOT NULL", name="officer_county"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    #: The officer's county (matched against a case's assigned county); unused for other roles.
    county: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="ApiToken.id"
    )


class ApiToken(Base):
    """An API token of a user: only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Hex SHA-256 of the whole token string.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the token, so people can tell their tokens apart in listings.
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: The token stops working at this moment.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="tokens")

    def is_live(self, now: dt.datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and self.expires_at > now


@dataclass(frozen=True)
class TokenInfo:
    """What listings show of a token (never the token itself)."""

    user: str
    prefix: str
    label: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None

    def status(self, now: dt.datetime) -> str:
        """``live``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        return "live" if self.expires_at > now else "expired"


@dataclass(frozen=True)
class Principal:
    """The authenticated user of a request (detached from any session)."""

    user_id: int
    name: str
    role: str
    county: str | None

    def can_see(self, assigned_county: str | None) -> bool:
        """Whether a case assigned to ``assigned_county`` is visible to this user."""
        return self.role != "officer" or (
            assigned_county is not None and assigned_county == self.county
        )

    def may_transition(self, current: str, target: str) -> bool:
        """Whether this user's role may move a case from ``current`` to ``target``."""
        return (current, target) in ROLE_TRANSITIONS.get(self.role, frozenset())

    def allowed_targets(self, current: str) -> list[str]:
        """The states this user may move a case in ``current`` to, in lifecycle order."""
        pairs = ROLE_TRANSITIONS.get(self.role, frozenset())
        return [t for t in _ordered(TRANSITIONS.get(current, frozenset())) if (current, t) in pairs]

    @property
    def can_assign(self) -> bool:
        """Reassigning a case to another county is the analysts' call."""
        return self.role == "analyst"

    @property
    def county_scope(self) -> str | None:
        """The only county this user may see, or None for every county."""
        return self.county if self.role == "officer" else None


def _ordered(states: frozenset[str]) -> list[str]:
    from .states import CASE_STATES

    return [s for s in CASE_STATES if s in states]


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (what is stored and looked up)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has the shape of a token (cheap pre-check before any database work)."""
    return bool(_TOKEN_RE.match(text))


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME_RE.match(name):
        raise AuthError(
            f"user name {name!r} is not valid: use 1-100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_role(role: str, county: str | None) -> tuple[str, str | None]:
    if role not in ROLES:
        raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")
    county = (county or "").strip() or None
    if role == "officer" and county is None:
        raise AuthError("an officer needs a county (--county NAME): it sees only that county")
    return role, county


def _run(target: TrackerDB | Session, work: Callable[[Session], T]) -> T:
    if isinstance(target, TrackerDB):
        return target.run_write(work)
    return work(target)


def add_user(
    target: TrackerDB | Session,
    name: str,
    role: str,
    *,
    county: str | None = None,
    now: dt.datetime | None = None,
) -> Principal:
    """Create a user (names are unique); returns it as a :class:`Principal`."""
    name = _check_name(name)
    role, county = _check_role(role, county)
    now = utc_now(now)

    def work(session: Session) -> Principal:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise AuthError(f"user {name!r} exists already")
        user = User(name=name, role=role, county=county, active=True, created_at=now)
        session.add(user)
        session.flush()
        return Principal(user.id, user.name, user.role, user.county)

    return _run(target, work)


def set_user_active(target: TrackerDB | Session, name: str, active: bool) -> None:
    """Disable (or re-enable) a user: a disabled user's tokens and sessions stop working at
    once."""

    def work(session: Session) -> None:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise AuthError(f"no user {name!r}")
        user.active = active

    _run(target, work)


def list_users(
    session: Session, *, now: dt.datetime | None = None
) -> list[tuple[Principal, bool, int]]:
    """Every user with whether it is active and how many live tokens it has."""
    now = utc_now(now)
    out = []
    for user in session.scalars(select(User).order_by(User.name)):
        live = sum(1 for t in user.tokens if t.is_live(now))
        out.append((Principal(user.id, user.name, user.role, user.county), user.active, live))
    return out


def _check_lifetime(lifetime: dt.timedelta) -> dt.timedelta:
    if lifetime <= dt.timedelta(0):
        raise AuthError(f"a token's lifetime must be positive, got {lifetime}")
    return lifetime


def _add_token(
    session: Session, user: User, label: str | None, lifetime: dt.timedelta, now: dt.datetime
) -> str:
    token = new_token()
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(token),
            prefix=token[: len(TOKEN_PREFIX) + 6],
            label=label,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def _user(session: Session, user_name: str) -> User:
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AuthError(f"no user {user_name!r}: create it first (tracker user add)")
    return user


def create_token(
    target: TrackerDB | Session,
    user_name: str,
    *,
    label: str | None = None,
    lifetime: dt.timedelta = DEFAULT_TOKEN_LIFETIME,
    now: dt.datetime | None = None,
) -> str:
    """A new token for ``user_name``, working for ``lifetime`` from ``now``. The token itself
    is returned once and never stored."""
    now = utc_now(now)
    lifetime = _check_lifetime(lifetime)
    return _run(
        target, lambda session: _add_token(session, _user(session, user_name), label, lifetime, now)
    )


def rotate_token(
    target: TrackerDB | Session,
    user_name: str,
    *,
    prefix: str | None = None,
    lifetime: dt.timedelta = DEFAULT_TOKEN_LIFETIME,
    now: dt.datetime | None = None,
) -> str:
    """Replace one live token of ``user_name`` by a new one with the same label.

    The old token is revoked in the same transaction (so are the sessions logged in with it);
    ``prefix`` picks the token when the user has several live ones. Returns the new token.
    """
    now = utc_now(now)
    lifetime = _check_lifetime(lifetime)

    def work(session: Session) -> str:
        user = _user(session, user_name)
        live = [
            t
            for t in user.tokens
            if t.is_live(now) and (prefix is None or t.prefix.startswith(prefix))
        ]
        if not live:
            which = f" starting with {prefix!r}" if prefix else ""
            raise AuthError(f"user {user_name!r} has no live token{which} to rotate")
        if len(live) > 1:
            prefixes = ", ".join(t.prefix for t in live)
            raise AuthError(
                f"user {user_name!r} has {len(live)} live tokens ({prefixes}): "
                "name the one to rotate with --prefix"
            )
        old = live[0]
        old.revoked_at = now
        return _add_token(session, user, old.label, lifetime, now)

    return _run(target, work)


def list_tokens(session: Session, user_name: str | None = None) -> list[TokenInfo]:
    """Every token (of ``user_name``, if given), newest first per user."""
    query = (
        select(User.name, ApiToken)
        .join(User, User.id == ApiToken.user_id)
        .order_by(User.name, ApiToken.id.desc())
    )
    if user_name is not None:
        _user(session, user_name)
        query = query.where(User.name == user_name)
    return [
        TokenInfo(name, t.prefix, t.label, t.created_at, t.expires_at, t.revoked_at)
        for name, t in session.execute(query)
    ]


def revoke_tokens(
    target: TrackerDB | Session,
    user_name: str,
    *,
    prefix: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Revoke the user's live tokens (only those starting with ``prefix``, if given); the
    sessions logged in with them end too."""
    now = utc_now(now)

    def work(session: Session) -> int:
        user = session.scalar(select(User).where(User.name == user_name))
        if user is None:
            raise AuthError(f"no user {user_name!r}")
        count = 0
        for tok in user.tokens:
            if tok.revoked_at is None and (prefix is None or tok.prefix.startswith(prefix)):
                tok.revoked_at = now
                count += 1
        return count

    return _run(target, work)


def live_token_clause(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: the joined token is neither revoked nor expired at ``now`` and its user is active
    (what makes a token, and any session opened with it, usable)."""
    return and_(ApiToken.revoked_at.is_(None), ApiToken.expires_at > now, User.active.is_(True))


def find_live_token(
    session: Session, token: str, *, now: dt.datetime | None = None
) -> tuple[int, Principal] | None:
    """The id of this token and its active user, if the token is live at ``now``; else None
    (unknown, revoked, expired, user disabled, malformed)."""
    if not looks_like_token(token):
        return None
    now = utc_now(now)
    digest = hash_token(token)
    row = session.execute(
        select(ApiToken.token_hash, ApiToken.id, User.id, User.name, User.role, User.county)
        .join(User, User.id == ApiToken.user_id)
        .where(
            ApiToken.token_hash == digest,
            live_token_clause(now),
        )
    ).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    return row[1], Principal(row[2], row[3], row[4], row[5])


def authenticate(
    session: Session, token: str, *, now: dt.datetime | None = None
) -> Principal | None:
    """The active user holding this token if it is live at ``now``, or None (unknown, revoked,
    expired, disabled, malformed)."""
    found = find_live_token(session, token, now=now)
    return None if found is None else found[1]
