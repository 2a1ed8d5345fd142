"""The webhook signature verifier: what it accepts and what it refuses. The service's own
signer (payment notifications, tilemore.billing.payments) and the SDK's agree on the format."""

from __future__ import annotations

import json
import time

import pytest
from tilemore_sdk import webhooks
from tilemore_sdk.webhooks import WebhookSignatureError

from tilemore.billing import payments

BODY = json.dumps({"type": "thread.done", "data": {"thread_id": "t1"}}).encode()
SECRET, OLD = "whsec_new", "whsec_old"


def refused(header: str | None, secret=SECRET, body: bytes = BODY, **kw) -> str:
    with pytest.raises(WebhookSignatureError) as info:
        webhooks.verify(body, header, secret, **kw)
    return info.value.code


def test_a_fresh_signature_is_accepted_and_the_event_parsed():
    t = int(time.time())
    assert webhooks.verify(BODY, webhooks.sign(BODY, SECRET), SECRET) in (t, t + 1)
    event = webhooks.construct_event(BODY.decode(), webhooks.sign(BODY, SECRET), SECRET)
    assert event["data"]["thread_id"] == "t1"


def test_the_services_signer_and_the_sdks_verifier_agree():
    header = payments.sign(BODY, SECRET)  # exactly what the service sends
    assert webhooks.verify(BODY, header, SECRET) > 0
    sdk_header = webhooks.sign(BODY, [OLD, SECRET], timestamp=1_700_000_000)
    assert sdk_header == payments.sign(BODY, [OLD, SECRET], timestamp=1_700_000_000)
    assert payments.verify(BODY, sdk_header, [SECRET], 300, now=1_700_000_100) == 1_700_000_000


def test_rotation_either_secret_matches():
    header = webhooks.sign(BODY, [OLD, SECRET])  # the service signs with both during overlap
    assert webhooks.verify(BODY, header, SECRET)
    assert webhooks.verify(BODY, header, OLD)
    assert webhooks.verify(BODY, webhooks.sign(BODY, OLD), [SECRET, OLD])  # receiver holds both
    assert refused(webhooks.sign(BODY, OLD)) == "invalid_signature"


def test_forged_signatures_are_refused():
    assert refused(webhooks.sign(BODY, "whsec_guess")) == "invalid_signature"
    assert refused(webhooks.sign(BODY, SECRET), body=BODY + b" ") == "invalid_signature"
    t = int(time.time())
    # the body signed under another timestamp, the header's t changed to a fresh one
    sig = webhooks.signature(BODY, SECRET, t - 1000)
    assert refused(f"t={t},v1={sig}") == "invalid_signature"


def test_replayed_and_future_signatures_are_refused():
    now = time.time()
    assert refused(webhooks.sign(BODY, SECRET, int(now) - 301)) == "stale_signature"
    assert refused(webhooks.sign(BODY, SECRET, int(now) + 301)) == "stale_signature"
    old = webhooks.sign(BODY, SECRET, int(now) - 3600)
    assert refused(old, tolerance=600) == "stale_signature"
    assert webhooks.verify(BODY, old, SECRET, tolerance=4000)  # the tolerance is the caller's


@pytest.mark.parametrize("header", [
    "", None, "garbage", "t=,v1=" + "a" * 64, "t=12x,v1=" + "a" * 64, "v1=" + "a" * 64,
    "t=1700000000", "t=1700000000,v1=xyz", "t=1700000000,v1=" + "A" * 64,
    "t=1,t=2,v1=" + "a" * 64, "t=1700000000," + ",".join(["v1=" + "a" * 64] * 9),
    "t=1700000000,v1=" + "a" * 64 + "," + "x" * 1100, "t=１７,v1=" + "a" * 64,
])
def test_malformed_headers_are_refused(header):
    assert refused(header) in ("missing_signature", "malformed_signature")


def test_other_schemes_are_ignored_as_stripe_does():
    header = webhooks.sign(BODY, SECRET) + ",v0=deadbeef"
    assert webhooks.verify(BODY, header, SECRET)


def test_an_empty_secret_is_a_programming_error():
    with pytest.raises(ValueError):
        webhooks.verify(BODY, webhooks.sign(BODY, SECRET), "")
