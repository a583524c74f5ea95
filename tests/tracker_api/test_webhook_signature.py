"""The Standard Webhooks signature scheme: the spec's test vector, interoperability with the
reference library, the replay window, secret rotation and what a receiver refuses."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest

from changedetect.errors import ConfigError
from changedetect.tracker.webhook_signature import (
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

# The reference libraries' fixed case (standard-webhooks, libraries/*/tests: "sign function")
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD = "whsec_Y2hhbmdlZGV0ZWN0IHdlYmhvb2sgdGVzdHMga2V5ISE="
NEW = "whsec_Y2hhbmdlZGV0ZWN0IHdlYmhvb2s6IGEgMm5kIGtleQ=="
BODY = b'{"event":"case.created","case":{"id":7,"county":"\xe5\x91\xa8\xe8\x87\xb3"}}'


def test_the_specs_test_vector():
    assert sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE
    headers = {
        ID_HEADER: VECTOR_ID,
        TIMESTAMP_HEADER: str(VECTOR_TIMESTAMP),
        SIGNATURE_HEADER: VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP) == VECTOR_ID
    # header names in any case, the body as text
    shouted = {k.upper(): v for k, v in headers.items()}
    assert verify(VECTOR_BODY.decode(), shouted, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 299)


def test_the_reference_library_verifies_our_signatures_and_we_verify_its():
    standardwebhooks = pytest.importorskip("standardwebhooks")
    headers = signed_headers("evt-1", BODY, OLD)  # now: the library checks the real clock
    assert standardwebhooks.Webhook(OLD).verify(BODY, headers)["case"]["id"] == 7
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(NEW).verify(BODY, headers)
    # rotation: a request signed with both secrets passes a receiver holding either one
    both = signed_headers("evt-2", BODY, f"{NEW} {OLD}")
    assert len(both[SIGNATURE_HEADER].split()) == 2
    for secret in (OLD, NEW):
        assert standardwebhooks.Webhook(secret).verify(BODY, both)["case"]["id"] == 7

    now = int(time.time())
    theirs = standardwebhooks.Webhook(NEW).sign(
        "evt-3", dt.datetime.fromtimestamp(now, dt.UTC), BODY
    )
    headers = {ID_HEADER: "evt-3", TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: theirs}
    assert verify(BODY, headers, NEW) == "evt-3"


def test_a_captured_request_is_refused_once_the_window_has_passed():
    sent_at = 1_750_000_000
    headers = signed_headers("evt-9", BODY, OLD, timestamp=sent_at)
    assert verify(BODY, headers, OLD, now=sent_at + 300) == "evt-9"  # the default 5 minutes
    with pytest.raises(WebhookVerificationError, match="301 s old, beyond the 300 s tolerance"):
        verify(BODY, headers, OLD, now=sent_at + 301)
    with pytest.raises(WebhookVerificationError, match="in the future"):
        verify(BODY, headers, OLD, now=sent_at - 301)
    with pytest.raises(WebhookVerificationError, match="61 s old"):
        verify(BODY, headers, OLD, now=sent_at + 61, tolerance_s=60)
    # refreshing the timestamp, or passing the request off as another event, breaks the signature
    later = sent_at + 3600
    for forged, now in (({TIMESTAMP_HEADER: str(later)}, later), ({ID_HEADER: "evt-10"}, sent_at)):
        with pytest.raises(WebhookVerificationError, match="no v1 signature"):
            verify(BODY, {**headers, **forged}, OLD, now=now)


def test_a_receiver_holding_both_secrets_accepts_either_signature():
    signed_with_old = signed_headers("evt-4", BODY, OLD, timestamp=1_750_000_000)
    assert verify(BODY, signed_with_old, [NEW, OLD], now=1_750_000_000) == "evt-4"
    assert verify(BODY, signed_with_old, f"{NEW} {OLD}", now=1_750_000_000) == "evt-4"
    with pytest.raises(WebhookVerificationError):
        verify(BODY, signed_with_old, NEW, now=1_750_000_000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({ID_HEADER: ""}, "without webhook-id"),
        ({TIMESTAMP_HEADER: "", SIGNATURE_HEADER: " "}, "webhook-timestamp, webhook-signature"),
        ({TIMESTAMP_HEADER: "1750000000.5"}, "not integer Unix seconds"),
        ({TIMESTAMP_HEADER: "-1750000000"}, "not integer Unix seconds"),
        ({TIMESTAMP_HEADER: "soon"}, "not integer Unix seconds"),
        ({SIGNATURE_HEADER: "v1,not*base64 garbage v2 v1a,AAAA v1,"}, "no v1 signature"),
    ],
)
def test_malformed_headers_are_refused_as_unverified(change, message):
    headers = {**signed_headers("evt-5", BODY, OLD, timestamp=1_750_000_000), **change}
    with pytest.raises(WebhookVerificationError, match=message):
        verify(BODY, headers, OLD, now=1_750_000_000)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("a-plain-secret-of-the-old-kind-0123", "not in the Standard Webhooks format whsec_"),
        ("whsec_not-base64-at-all!!", "not base64 after 'whsec_'"),
        ("whsec_" + base64.b64encode(b"sixteen bytes...").decode(), "holds 16 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "holds 65 bytes"),
        (f"{OLD} whsec_%%%%", "webhook secret 2 of 2 is not base64"),
        ("  ", "no webhook secret"),
    ],
)
def test_malformed_secrets_are_refused_without_showing_them(secret, message):
    with pytest.raises(ConfigError, match=message) as caught:
        signing_keys(secret)
    for part in secret.split():
        assert part[6:] not in str(caught.value) or part == "whsec_"


def test_new_secrets_are_random_keys_of_the_specs_format():
    one, two = new_secret(), new_secret()
    assert one != two and one.startswith("whsec_")
    assert signing_keys(one)[0] == base64.b64decode(one[6:]) and len(signing_keys(one)[0]) == 32


def test_an_id_with_a_dot_is_not_signed():
    # "{id}.{timestamp}.{body}" would be ambiguous
    with pytest.raises(ValueError, match="free of '.'"):
        sign("evt.1", 1_750_000_000, BODY, OLD)
