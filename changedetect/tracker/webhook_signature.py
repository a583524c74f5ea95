"""Standard Webhooks signatures (https://www.standardwebhooks.com): sign a delivery, verify one.

Every webhook request carries three headers:

- ``webhook-id``: the event's id, the same on every retry of that event, so a receiver
  processes it once (its idempotency key);
- ``webhook-timestamp``: when this attempt was made, in integer Unix seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one entry
  per signing secret, space-separated (two while a secret is being rotated).

The id and the attempt's time are signed with the body, so a captured request cannot be
replayed later: a receiver refuses a timestamp outside its tolerance (5 minutes by default),
and a fresh timestamp breaks the signature. Within the window, remembering the ids already
processed stops a replay.

Secrets are ``whsec_`` followed by the base64 of 24 to 64 random bytes (the spec's format, which
every Standard Webhooks library reads); :func:`new_secret` makes one.

A receiver checks a request with :func:`verify` before trusting anything in it::

    from changedetect.tracker.webhook_signature import WebhookVerificationError, verify

    try:
        event_id = verify(raw_body, request_headers, secret)  # raw bytes, not re-serialised JSON
    except WebhookVerificationError:
        ...  # answer 401 and ignore the request
    if already_processed(event_id):
        ...  # a retry (or a replay within the window): answer 2xx and do nothing

The ``standardwebhooks`` package (``Webhook(secret).verify(raw_body, headers)``) checks the same
thing for receivers that prefer it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Iterable, Mapping

from ..errors import ChangeDetectError, ConfigError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
#: The spec's tag of a symmetric (HMAC-SHA256) signature.
SIGNATURE_VERSION = "v1"
#: How far a receiver lets a request's timestamp stray from its own clock, either way.
DEFAULT_TOLERANCE_S = 300.0
#: The spec's bounds on an HMAC key (192 to 512 bits).
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_GENERATE_HINT = (
    "generate one with: changedetect tracker webhook secret  (or: python -c 'import base64, "
    'secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\')'
)


class WebhookVerificationError(ChangeDetectError):
    """A webhook request that must not be trusted: a header missing or malformed, a timestamp
    outside the tolerance, or no signature made with the receiver's secret."""


def new_secret(nbytes: int = 32) -> str:
    """A fresh random signing secret in the ``whsec_<base64>`` format."""
    if not MIN_KEY_BYTES <= nbytes <= MAX_KEY_BYTES:
        raise ValueError(f"a secret has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {nbytes}")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode("ascii")


def signing_keys(secrets: str | Iterable[str]) -> tuple[bytes, ...]:
    """The HMAC keys of one ``whsec_`` secret or several (space-separated, or an iterable).

    Raises :class:`~changedetect.errors.ConfigError` naming which secret is malformed and how;
    the message never contains a secret.
    """
    items = secrets.split() if isinstance(secrets, str) else [s.strip() for s in secrets]
    if not items or not all(items):
        raise ConfigError(f"no webhook secret given; {_GENERATE_HINT}")
    return tuple(_key(secret, i, len(items)) for i, secret in enumerate(items, 1))


def _key(secret: str, position: int, count: int) -> bytes:
    which = "the webhook secret" if count == 1 else f"webhook secret {position} of {count}"
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(
            f"{which} is not in the Standard Webhooks format {SECRET_PREFIX}<base64 of "
            f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes>; {_GENERATE_HINT}"
        )
    encoded = secret[len(SECRET_PREFIX) :]
    try:  # padding is optional in the format; anything but base64 is a typo, not a key
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{which} is not base64 after {SECRET_PREFIX!r}; {_GENERATE_HINT}"
        ) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ConfigError(
            f"{which} holds {len(key)} bytes; the Standard Webhooks format takes "
            f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES}; {_GENERATE_HINT}"
        )
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(msg_id: str, timestamp: int, body: bytes, secrets: str | Iterable[str]) -> str:
    """The ``webhook-signature`` value of one attempt: a ``v1,<base64>`` entry per secret."""
    if not msg_id or "." in msg_id:
        # the signed content is dot-delimited: a dot in the id would make it ambiguous
        raise ValueError(f"webhook id {msg_id!r} must be non-empty and free of '.'")
    if timestamp < 0:
        raise ValueError(f"webhook timestamp {timestamp} is before 1970")
    return " ".join(
        f"{SIGNATURE_VERSION},{base64.b64encode(_digest(key, msg_id, timestamp, body)).decode()}"
        for key in signing_keys(secrets)
    )


def signed_headers(
    msg_id: str, body: bytes, secrets: str | Iterable[str], *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers of an attempt made at ``timestamp`` (default: now)."""
    when = int(time.time()) if timestamp is None else int(timestamp)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(when),
        SIGNATURE_HEADER: sign(msg_id, when, body, secrets),
    }


def _shown(value: str) -> str:
    """A header value fit for an error message (it comes from whoever sent the request)."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secrets: str | Iterable[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check a received webhook request; return its ``webhook-id`` (to deduplicate on).

    ``body`` is the raw request body exactly as received (a ``str`` is taken as its UTF-8
    bytes); ``headers`` the request's headers, in any letter case; ``secrets`` the receiver's
    ``whsec_`` secret, or several during a rotation (any one matching suffices). The timestamp
    must lie within ``tolerance_s`` seconds of ``now`` (default: this machine's clock), either
    way, and one ``v1`` signature must match, compared in constant time.

    Raises :class:`WebhookVerificationError` saying what is wrong (never with a secret in it),
    and :class:`~changedetect.errors.ConfigError` for a malformed secret.
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must not be negative, got {tolerance_s}")
    keys = signing_keys(secrets)
    lowered = {name.lower(): value for name, value in headers.items()}
    found = {h: lowered.get(h, "").strip() for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)}
    missing = [h for h, value in found.items() if not value]
    if missing:
        raise WebhookVerificationError(f"webhook request without {', '.join(missing)}")
    msg_id, stamp, signatures = found[ID_HEADER], found[TIMESTAMP_HEADER], found[SIGNATURE_HEADER]
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} {_shown(stamp)} is not integer Unix seconds"
        )
    timestamp = int(stamp)
    clock = time.time() if now is None else now
    if timestamp < clock - tolerance_s:
        raise WebhookVerificationError(
            f"webhook timestamp {timestamp} is {clock - timestamp:.0f} s old, beyond the "
            f"{tolerance_s:.0f} s tolerance: a stale or replayed request"
        )
    if timestamp > clock + tolerance_s:
        raise WebhookVerificationError(
            f"webhook timestamp {timestamp} is {timestamp - clock:.0f} s in the future, beyond "
            f"the {tolerance_s:.0f} s tolerance (are the clocks apart?)"
        )
    payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    expected = [_digest(key, msg_id, timestamp, payload) for key in keys]
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue  # another scheme (e.g. v1a, asymmetric): not ours to check
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(candidate, digest) for digest in expected):
            return msg_id
    raise WebhookVerificationError(
        f"no {SIGNATURE_VERSION} signature of webhook {_shown(msg_id)} matches the secret"
    )


__all__ = [
    "DEFAULT_TOLERANCE_S",
    "ID_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "signed_headers",
    "signing_keys",
    "verify",
]
