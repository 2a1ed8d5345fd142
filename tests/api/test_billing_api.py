"""Billing over HTTP: charges per task, 402 before work, credits only from a signed payment
notification, subletting as transfers."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from support.images import encode, noisy, photo
from support.service_harness import Service, http, multipart
from support.waits import until

from tilemore.billing.payments import HEADER, notification, sign
from tilemore.billing.pricing import estimate
from tilemore.pipeline.graph import build_graph

ENV = {"output_format": "png", "adjustments": {"master": {"algorithm": "bilateral"}}}
D = Decimal
SECRET = "whsec_billing_tests"


def image(seed: int, size=(96, 72)) -> bytes:
    return encode(noisy(photo(*size), 10, seed=seed), "PNG")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("billing"), credits="5",
                payment_webhook_secret=SECRET)
    yield s
    s.close()


def get(svc, path, auth=None):
    return http("GET", f"{svc.url}{path}", headers=auth or svc.auth())


def post(svc, path, body, auth=None):
    return http("POST", f"{svc.url}{path}", json.dumps(body).encode(),
                {"Content-Type": "application/json", **(auth or svc.auth())})


def notify(svc, event_id: str, order_id: str, amount: str, domain: str = "acme"):
    body = notification(event_id, domain, order_id, amount)
    return http("POST", f"{svc.url}/billing/payment-notifications", body,
                {"Content-Type": "application/json", HEADER: sign(body, SECRET)})


def balance(svc, auth=None, account=None) -> Decimal:
    q = f"?account={account}" if account else ""
    return D(get(svc, f"/billing/balance{q}", auth).json()["balance"])


def test_each_task_is_charged_once(svc):
    before = balance(svc)
    img = image(1)
    body = svc.wait(svc.submit(img, ENV).json()["thread_id"])
    charged = D(body["credits_charged"])
    assert body["status"] == "done" and charged > 0
    assert balance(svc) == before - charged
    today = datetime.now(UTC).date().isoformat()
    ops = get(svc, f"/billing/operations?date={today}").json()["operations"]
    mine = [o for o in ops if o["thread_id"] == body["thread_id"]]
    assert sorted(o["task_id"] for o in mine) == sorted(t["id"] for t in body["tasks"])
    assert sum(-D(o["amount"]) for o in mine) == charged
    for again in (svc.submit(img, ENV), svc.submit(img, ENV, upload=False)):  # replays
        assert D(again.json()["credits_charged"]) == charged
    assert balance(svc) == before - charged
    held = D(get(svc, "/billing/balance").json()["held"])
    assert held == 0  # the reservation was released when the thread ended


def test_abbreviated_history_has_the_guides_fields(svc):
    days = get(svc, "/billing/history").json()["days"]
    assert len(days) == 31
    assert list(days[-1]) == ["date", "amount_when_day_started", "transaction_total",
                              "traced_total", "ordered_total", "applied_commitment_bonus"]
    assert all(len(v.split(".")[1]) == 20 for d in days for k, v in d.items() if k != "date")
    three_days_ago = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    old = get(svc, f"/billing/operations?date={three_days_ago}")
    assert (old.status, old.code) == (422, "history_out_of_range")
    assert get(svc, "/billing/operations?date=yesterday").code == "invalid_date"


def test_402_before_anything_runs(backend):
    s = Service(backend.root, credits="0.00000000000000000001", database_url=backend.url)
    try:
        reply = s.submit(image(2), ENV)
        assert (reply.status, reply.code) == (402, "insufficient_credits")
        assert s.store._query("SELECT COUNT(*) AS n FROM threads")[0]["n"] == 0  # noqa
    finally:
        s.close()


def test_concurrent_submissions_run_exactly_as_many_as_the_balance_covers(backend):
    s = Service(backend.root, credits="1", database_url=backend.url)
    try:
        graph = build_graph(s.catalog.pipeline("denoised"), ENV["adjustments"], "png")
        cost = estimate(graph, 96, 72, {})
        covered = 3
        top_up = cost * covered + cost / 2 - D(1)
        s.billing.order("acme", "exact", top_up.quantize(D("1e-20")))
        images = [image(100 + i) for i in range(8)]

        async def burst():
            import aiohttp
            async with aiohttp.ClientSession() as session:
                async def one(img):
                    body, ctype = multipart(ENV, img)
                    url = f"{s.url}/x/submitted/{hashlib.sha256(img).hexdigest()}/"
                    async with session.post(url, data=body, headers={
                            "Content-Type": ctype, **s.auth()}) as r:
                        return r.status, await r.json()
                return await asyncio.gather(*(one(i) for i in images))

        answers = asyncio.run(burst())
        assert sorted(status for status, _ in answers) == [202] * covered + [402] * 5
        for status, body in answers:
            if status == 202:
                assert s.wait(body["thread_id"])["status"] == "done"
        assert balance(s) >= 0
        assert s.ledger.verify().ok
    finally:
        s.close()


def test_no_token_can_order_credits(svc):
    before = balance(svc)
    body = json.dumps({"order_id": "free", "amount": "1000000"}).encode()
    for auth in (svc.auth(), {}):  # the domain's own token, and none at all
        reply = http("POST", f"{svc.url}/billing/orders", body,
                     {"Content-Type": "application/json", **auth})
        assert (reply.status, reply.code) == (403, "orders_disabled")
        assert "payment-notifications" in reply.json()["error"]["message"]
    assert balance(svc) == before


def test_a_payment_notification_applies_the_plan_bonus_once(svc):
    svc.billing.ledger.set_plan("acme", D("10"), "annual 10,000 credits")
    before = balance(svc)
    first = notify(svc, "evt-7", "inv-7", "100")
    assert first.status == 200 and first.json()["applied_commitment_bonus"].startswith("10.0")
    assert first.json()["replayed"] is False
    assert notify(svc, "evt-7", "inv-7", "100").json()["replayed"] is True  # same event
    assert notify(svc, "evt-8", "inv-7", "100").json()["replayed"] is True  # same order
    assert balance(svc) == before + D("110")
    clash = notify(svc, "evt-9", "inv-7", "99")
    assert (clash.status, clash.code) == (409, "duplicate_reference")
    today = get(svc, "/billing/history").json()["days"][-1]
    assert D(today["applied_commitment_bonus"]) >= D("10")
    assert D(today["ordered_total"]) >= D("100")


@pytest.mark.parametrize("amount, code", [
    ("-5", "invalid_amount"), ("0", "invalid_amount"), ("five", "invalid_amount"),
    ("1.000000000000000000001", "invalid_amount"), ("1e18", "amount_out_of_range"),
])
def test_bad_amounts(svc, amount, code):
    reply = notify(svc, f"evt-bad-{amount}", f"inv-bad-{amount}", amount)
    assert (reply.status, reply.code) == (422, code)


@pytest.mark.parametrize("name", ["studio\n", "-studio", "", "a/b", "x" * 129])
def test_bad_subaccount_names(svc, name):
    reply = post(svc, "/billing/subaccounts", {"name": name})
    assert (reply.status, reply.code) == (400, "invalid_name")  # a newline after it too


def test_subletting(svc):
    made = post(svc, "/billing/subaccounts", {"name": "studio-k"})
    assert made.status == 201 and made.json()["account"] == "acme/studio-k"
    token = post(svc, "/billing/subaccounts/studio-k/tokens", {}).json()["token"]
    sub = svc.auth(token)
    domain_before = balance(svc)
    pay = post(svc, "/billing/subaccounts/studio-k/payments",
               {"payment_id": "stripe-1", "amount": "2"})
    assert pay.status == 200 and D(pay.json()["balance"]) == D("2")
    assert balance(svc) == domain_before - 2  # moved from the domain, not made
    assert post(svc, "/billing/subaccounts/studio-k/payments",
                {"payment_id": "stripe-1", "amount": "2"}).json()["replayed"] is True
    clash = post(svc, "/billing/subaccounts/studio-k/payments",
                 {"payment_id": "stripe-1", "amount": "3"})
    assert (clash.status, clash.code) == (409, "duplicate_reference")
    assert post(svc, "/billing/subaccounts/nobody/payments",
                {"payment_id": "p", "amount": "1"}).code == "unknown_account"
    too_much = post(svc, "/billing/subaccounts/studio-k/payments",
                    {"payment_id": "stripe-2", "amount": str(balance(svc) + 1)})
    assert (too_much.status, too_much.code) == (402, "insufficient_credits")
    assert balance(svc) == domain_before - 2 and balance(svc, sub) == D("2")

    parent_before = balance(svc)
    mine = svc.wait(svc.submit(image(3), ENV, headers=sub).json()["thread_id"], headers=sub)
    assert mine["account"] == "acme/studio-k" and mine["status"] == "done"
    on_behalf = svc.submit(image(4), {**ENV, "account": "studio-k"})
    done = svc.wait(on_behalf.json()["thread_id"])
    assert done["account"] == "acme/studio-k"
    spent = D(mine["credits_charged"]) + D(done["credits_charged"])
    assert balance(svc, sub) == D("2") - spent
    assert balance(svc) == parent_before  # the parent paid nothing
    traced = D(get(svc, "/billing/history").json()["days"][-1]["traced_total"])
    assert traced >= spent

    # a sub-account sees only its own
    assert get(svc, "/billing/balance?account=studio-k", sub).status == 200
    for path in ("/billing/subaccounts", "/billing/history?account=other"):
        assert get(svc, path, sub).code == "wrong_account"
    assert post(svc, "/billing/orders", {"order_id": "x", "amount": "1"}, sub).code == \
        "orders_disabled"
    assert post(svc, "/billing/subaccounts/studio-k/payments",
                {"payment_id": "self", "amount": "1"}, sub).code == "wrong_account"
    parents_thread = svc.submit(image(5), ENV).json()["thread_id"]
    assert get(svc, f"/threads/{parents_thread}", sub).code == "wrong_account"
    # and another domain sees none of it
    rival = svc.auth(svc.rival_token, "rival")
    assert get(svc, "/billing/balance?account=studio-k", rival).code == "unknown_account"
    listed = get(svc, "/billing/subaccounts").json()["subaccounts"]
    assert [a["name"] for a in listed] == ["studio-k"]
    assert svc.ledger.verify().ok


def test_a_lost_input_fails_at_once_and_gives_back_its_hold(svc):
    """The input blob is gone (expired, deleted) before the conductor picks the thread up:
    the thread fails with blob_not_found on its first attempt, and nothing stays held."""
    handoff = svc.api.handoff
    svc.api.handoff = lambda thread_id: None  # the hand-off is lost; a sweep would run it
    try:
        reply = svc.submit(image(6), ENV)
    finally:
        svc.api.handoff = handoff
    assert reply.status == 202
    thread_id = reply.json()["thread_id"]
    assert D(get(svc, "/billing/balance").json()["held"]) > 0
    key = svc.store.get_thread(thread_id).input_key
    (svc.settings.blob_path / key[:2] / key).unlink()
    svc.conductor.submit(thread_id)  # what the sweep does
    body = svc.wait(thread_id, timeout=10)
    assert body["status"] == "failed" and body["error"]["code"] == "blob_not_found"
    assert D(body["credits_charged"]) == 0
    # given back as the run ends, just after the thread's end is recorded and dated
    assert until(lambda: D(get(svc, "/billing/balance").json()["held"]) == 0, 5, 0.05)
