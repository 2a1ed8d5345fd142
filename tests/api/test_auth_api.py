"""Bearer tokens and scopes over real HTTP: both header forms, 403 insufficient_scope per
route, tokens issued with scopes (never more than the issuer holds), unknown scopes refused."""

from __future__ import annotations

import json

import pytest
from support.images import encode, noisy, photo
from support.service_harness import Service, http

ENV = {"output_format": "png", "adjustments": {"master": {"algorithm": "bilateral"}}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("auth"))
    s.store.create_subaccount("acme", "studio")
    yield s
    s.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def call(svc, method, path, auth, body=None):
    data = None if body is None else json.dumps(body).encode()
    return http(method, f"{svc.url}{path}", data, {"Content-Type": "application/json", **auth})


def image(seed: int) -> bytes:
    return encode(noisy(photo(64, 48), 10, seed=seed), "PNG")


def test_bearer_and_the_guides_header_both_work(svc):
    sent = svc.submit(image(1), ENV, headers=bearer(svc.token))
    assert sent.status == 202, sent.body
    thread = sent.json()["thread_id"]
    assert svc.wait(thread, headers=bearer(svc.token))["status"] == "done"
    assert call(svc, "GET", f"/threads/{thread}", svc.auth()).status == 200
    # a Bearer token of another domain reads nothing of acme's
    assert call(svc, "GET", f"/threads/{thread}", bearer(svc.rival_token)).code == \
        "wrong_domain"


def test_401_says_how_to_authenticate(svc):
    for auth in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        reply = call(svc, "GET", "/billing/balance", auth)
        assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("scope, allowed", [
    ("submit", {"submit", "cancel"}),
    ("read", {"thread", "balance", "errors"}),
    ("billing", {"subaccounts", "token", "payment"}),
])
def test_each_route_needs_its_scope(svc, scope, allowed):
    _, secret = svc.store.issue_token("acme", scopes=(scope,))
    auth = bearer(secret)
    mine = svc.submit(image(2), ENV).json()["thread_id"]
    tries = {
        "submit": lambda: svc.submit(image(3), ENV, headers=auth),
        "cancel": lambda: call(svc, "POST", f"/threads/{mine}/cancel", auth),
        "thread": lambda: call(svc, "GET", f"/threads/{mine}", auth),
        "balance": lambda: call(svc, "GET", "/billing/balance", auth),
        "errors": lambda: call(svc, "GET", "/errors?q=nothing", auth),
        "subaccounts": lambda: call(svc, "GET", "/billing/subaccounts", auth),
        "token": lambda: call(svc, "POST", "/billing/subaccounts/studio/tokens", auth,
                              {"scopes": [scope]}),
        "payment": lambda: call(svc, "POST", "/billing/subaccounts/studio/payments", auth,
                                {"payment_id": f"p-{scope}", "amount": "0.5"}),
    }
    for name, attempt in tries.items():
        reply = attempt()
        if name in allowed:
            assert reply.code != "insufficient_scope", (name, reply.status, reply.body)
            assert reply.status < 400 or reply.code == "already_finished", (name, reply.body)
        else:
            assert (reply.status, reply.code) == (403, "insufficient_scope"), name
            assert f'scope="{name_scope(name)}"' in reply.headers["www-authenticate"]


def name_scope(route: str) -> str:
    return {"submit": "submit", "cancel": "submit", "thread": "read", "balance": "read",
            "errors": "read"}.get(route, "billing")


def test_sub_account_tokens_carry_scopes(svc):
    made = call(svc, "POST", "/billing/subaccounts/studio/tokens", svc.auth(),
                {"scopes": ["read"]})
    assert made.status == 201 and made.json()["scopes"] == ["read"]
    token = made.json()["token"]
    assert made.json()["bearer"] == f"Bearer {token}"
    reader = bearer(token)
    assert call(svc, "GET", "/billing/balance", reader).status == 200
    refused = svc.submit(image(4), ENV, headers=reader)
    assert (refused.status, refused.code) == (403, "insufficient_scope")
    # no body: the caller's own scopes (a full token: all three)
    full = call(svc, "POST", "/billing/subaccounts/studio/tokens", svc.auth())
    assert full.status == 201 and full.json()["scopes"] == ["submit", "read", "billing"]


@pytest.mark.parametrize("scopes", [["admin"], ["read", "bogus"], [], "nope", 7])
def test_an_unknown_scope_is_422(svc, scopes):
    before = len(svc.store.list_tokens("acme"))
    reply = call(svc, "POST", "/billing/subaccounts/studio/tokens", svc.auth(),
                 {"scopes": scopes})
    assert (reply.status, reply.code) == (422, "unknown_scope"), reply.body
    assert len(svc.store.list_tokens("acme")) == before


def test_a_token_cannot_grant_what_it_lacks(svc):
    _, secret = svc.store.issue_token("acme", scopes=("billing",))
    reply = call(svc, "POST", "/billing/subaccounts/studio/tokens", bearer(secret),
                 {"scopes": ["billing", "submit"]})
    assert (reply.status, reply.code) == (403, "insufficient_scope")
    narrow = call(svc, "POST", "/billing/subaccounts/studio/tokens", bearer(secret))
    assert narrow.status == 201 and narrow.json()["scopes"] == ["billing"]
