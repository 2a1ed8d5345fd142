"""Credits from a payment provider: signed, timestamped, replay-proof notifications over real
HTTP, and the 10^18 range on both databases."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from support.service_harness import Service, http

from tilemore.billing.payments import HEADER, notification, sign, signature

D = Decimal
OLD, NEW = "whsec_old", "whsec_new"
PATH = "/billing/payment-notifications"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    # Two secrets: the service accepts either while the provider rotates.
    s = Service(tmp_path_factory.mktemp("payments"), credits="0",
                payment_webhook_secret=f"{OLD}, {NEW}")
    yield s
    s.close()


def send(svc, body: bytes, header: str | None):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[HEADER] = header
    return http("POST", f"{svc.url}{PATH}", body, headers)


def balance(svc, domain: str = "acme") -> Decimal:
    return svc.billing.balance(domain).balance


def test_a_signed_notification_credits_the_domain_once(svc):
    body = notification("evt_1", "acme", "inv-1", "25.5")
    reply = send(svc, body, sign(body, NEW))
    assert reply.status == 200, reply.body
    assert reply.json() == {"event_id": "evt_1", "domain": "acme", "order_id": "inv-1",
                            "amount": "25.50000000000000000000",
                            "applied_commitment_bonus": "0.00000000000000000000",
                            "replayed": False}
    again = send(svc, body, sign(body, NEW))  # a provider's retry, or a captured request
    assert again.status == 200 and again.json()["replayed"] is True
    assert balance(svc) == D("25.5")
    assert svc.ledger.entries("acme")[-1]["reference"] == "inv-1"


def test_rotation_any_v1_and_either_secret(svc):
    body = notification("evt_rot", "acme", "inv-rot", "1")
    t = int(time.time())
    header = f"t={t},v1={signature(body, 'whsec_gone', t)},v1={signature(body, OLD, t)}"
    assert send(svc, body, header).status == 200
    assert balance(svc) == D("26.5")


@pytest.mark.parametrize("header, status, code", [
    (None, 401, "missing_signature"),
    ("", 401, "missing_signature"),
    ("v1=" + "0" * 64, 400, "malformed_signature"),  # no timestamp
    ("t=123", 400, "malformed_signature"),  # no signature
    ("t=1e9,v1=" + "0" * 64, 400, "malformed_signature"),
    ("t=123,v1=xyz", 400, "malformed_signature"),
    ("t=123," + ",".join(["v1=" + "0" * 64] * 9), 400, "malformed_signature"),
    ("t=" + "9" * 5000, 400, "malformed_signature"),
])
def test_malformed_or_missing_signatures(svc, header, status, code):
    body = notification("evt_m", "acme", "inv-m", "1000")
    reply = send(svc, body, header)
    assert (reply.status, reply.code) == (status, code)


def test_forged_tampered_and_stale_notifications_credit_nothing(svc):
    before = balance(svc)
    body = notification("evt_f", "acme", "inv-f", "1000")
    reply = send(svc, body, sign(body, "whsec_guessed"))
    assert (reply.status, reply.code) == (401, "invalid_signature")
    # Signed, then changed on the way: the amount is part of what is signed.
    tampered = notification("evt_f", "acme", "inv-f", "1000000")
    reply = send(svc, tampered, sign(body, NEW))
    assert (reply.status, reply.code) == (401, "invalid_signature")
    # A valid signature from long ago (a captured request, sent again) or from the future.
    for skew in (-330, 330):  # past the 300 s tolerance, whatever second it is sent in
        reply = send(svc, body, sign(body, NEW, int(time.time()) + skew))
        assert (reply.status, reply.code) == (401, "stale_signature")
    # The timestamp is signed too: moving it breaks the signature.
    t = int(time.time()) - 1000
    moved = f"t={int(time.time())},v1={signature(body, NEW, t)}"
    assert send(svc, body, moved).code == "invalid_signature"
    assert balance(svc) == before


@pytest.mark.parametrize("fields, code", [
    ({"event_id": "e", "domain": "acme", "order_id": "o"}, "invalid_notification"),
    ({"event_id": "e", "domain": "acme", "order_id": "o", "amount": "1", "bonus": "9"},
     "invalid_notification"),
    ({"event_id": "e", "domain": "acme", "order_id": "o", "amount": 1}, "invalid_amount"),
    ({"event_id": "e", "domain": "acme", "order_id": "o", "amount": 1.5}, "invalid_amount"),
    ({"event_id": 7, "domain": "acme", "order_id": "o", "amount": "1"},
     "invalid_notification"),
    ({"event_id": "e", "domain": "acme", "order_id": "", "amount": "1"},
     "invalid_notification"),
    ({"event_id": "e" * 201, "domain": "acme", "order_id": "o", "amount": "1"},
     "invalid_notification"),
    ({"event_id": "e", "domain": "../acme", "order_id": "o", "amount": "1"},
     "invalid_notification"),
    ({"event_id": "e", "domain": "nobody", "order_id": "o", "amount": "1"}, "unknown_domain"),
    ({"event_id": "e", "domain": "acme", "order_id": "o", "amount": "NaN"}, "invalid_amount"),
])
def test_strictly_parsed_bodies(svc, fields, code):
    body = json.dumps(fields).encode()
    reply = send(svc, body, sign(body, NEW))
    assert reply.code == code and reply.status in (400, 422)


def test_odd_bodies(svc):
    for body, status, code in ((b"[]", 422, "invalid_notification"),
                               (b"not json", 400, "malformed_json"),
                               (b'{"event_id": "a", "event_id": "b"}', 400, "malformed_json"),
                               (b"\xff\xfe", 400, "malformed_json"),
                               (b"[" * 10_000 + b"]" * 10_000, 413, "body_too_large"),
                               (b"[" * 5000 + b"]" * 5000, 400, "malformed_json")):
        reply = send(svc, body, sign(body, NEW))
        assert (reply.status, reply.code) == (status, code), body[:20]
    big = b'{"pad": "' + b"x" * 17_000 + b'"}'
    reply = send(svc, big, sign(big, NEW))
    assert (reply.status, reply.code) == (413, "body_too_large")


def test_without_a_secret_the_endpoint_is_off(tmp_path):
    s = Service(tmp_path)
    try:
        body = notification("evt", "acme", "inv", "5")
        reply = send(s, body, sign(body, ""))
        assert (reply.status, reply.code) == (404, "payments_not_configured")
    finally:
        s.close()


def test_balances_stay_below_10_18_over_http(backend):
    """Both databases answer 422 amount_out_of_range, never a 500 (NUMERIC overflow)."""
    s = Service(backend.root, credits="1000", database_url=backend.url,
                payment_webhook_secret=NEW)
    try:
        body = notification("evt-top", "acme", "top", "999999999999998000")
        assert send(s, body, sign(body, NEW)).status == 200
        body = notification("evt-over", "acme", "over", "1000")  # the balance: 10^18
        reply = send(s, body, sign(body, NEW))
        assert (reply.status, reply.code) == (422, "amount_out_of_range")
        auth = {"Content-Type": "application/json", **s.auth()}
        http("POST", f"{s.url}/billing/subaccounts", b'{"name": "big"}', auth)

        def pay(pid: str, amount: str):
            return http("POST", f"{s.url}/billing/subaccounts/big/payments",
                        json.dumps({"payment_id": pid, "amount": amount}).encode(), auth)

        assert pay("p1", "600000000000000000").status == 200
        # The balance has room again, the day's ordered total does not (same column type).
        body = notification("evt-more", "acme", "more", "600000000000000000")
        reply = send(s, body, sign(body, NEW))
        assert (reply.status, reply.code) == (422, "amount_out_of_range")
        reply = pay("p2", "400000000000000000")  # more than the domain has left
        assert (reply.status, reply.code) == (402, "insufficient_credits")
        assert balance(s) == D("399999999999999000") and balance(s, "acme/big") == D("6e17")
        assert s.ledger.verify().ok
    finally:
        s.close()
