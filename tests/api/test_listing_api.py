"""``GET /threads`` over real HTTP, on SQLite and PostgreSQL: newest first, keyset pages that
neither skip nor repeat, each filter, only the caller's threads, and bad parameters as 400s
with a code."""

from __future__ import annotations

import base64
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import pytest
from support.backends import NAMES, Backend
from support.images import encode, noisy, photo
from support.service_harness import Service, http

BROKEN = Path(__file__).parents[1] / "data" / "broken.yaml"
ENV = {"output_format": "png", "adjustments": {"master": {"algorithm": "bilateral"}}}


@pytest.fixture(scope="module", params=NAMES)
def svc(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"listing-{request.param}")
    db = Backend.of(request, root / "db")
    s = Service(root, database_url=db.url, pipeline_paths=[BROKEN])
    s.store.create_subaccount("acme", "studio")
    s.billing.payment("acme", "acme/studio", "p1", Decimal("100"))
    _, s.studio_token = s.store.issue_token("acme", "acme/studio")
    s.made = []  # (thread id, meta, status), oldest first
    for i, (meta, env, auth) in enumerate([
            ("shop/v1", ENV, None), ("shop/a_b", ENV, None), ("shop/axb", ENV, None),
            ("lab/v1", {"adjustments": {}, "pipeline": "broken"}, None),
            ("shop/v1", ENV, s.auth(s.studio_token)), ("lab/v2", ENV, None)]):
        if i == 3:
            s.since = time.time()
        image = encode(noisy(photo(48, 32), 10, seed=100 + i), "PNG")
        sent = s.submit(image, env, meta=meta, headers=auth)
        assert sent.status == 202, sent.body
        tid = sent.json()["thread_id"]
        s.made.append((tid, meta, s.wait(tid, headers=auth)["status"]))
    s.rival_thread = s.submit(encode(photo(40, 30), "PNG"), ENV,
                              headers=s.auth(s.rival_token, "rival")).json()["thread_id"]
    yield s
    s.close()
    db.close()


def listing(svc, auth=None, **params):
    query = urlencode(params, doseq=True)
    return http("GET", f"{svc.url}/threads?{query}", headers=auth or svc.auth())


def ids(reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [t["thread_id"] for t in reply.json()["threads"]]


def test_newest_first_with_whole_thread_answers(svc):
    reply = listing(svc)
    assert ids(reply) == [t for t, _, _ in reversed(svc.made)]
    assert reply.json()["next_cursor"] is None
    first = reply.json()["threads"][0]
    alone = http("GET", f"{svc.url}/threads/{first['thread_id']}", headers=svc.auth()).json()
    assert first == alone  # the same answer GET /threads/{id} gives


def test_pages_neither_skip_nor_repeat(svc):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        reply = listing(svc, **params)
        page = ids(reply)
        assert len(page) <= 2
        seen += page
        pages += 1
        cursor = reply.json()["next_cursor"]
        if cursor is None:
            break
        # a thread created meanwhile lands before the cursor, not in later pages
        if pages == 1:
            late = svc.submit(encode(photo(36, 24), "PNG"), ENV, meta="late/v1")
            svc.late = late.json()["thread_id"]
    assert seen == [t for t, _, _ in reversed(svc.made)] and pages == 3
    assert ids(listing(svc, limit=1)) == [svc.late]


def test_filters(svc):
    def by(pred) -> list[str]:
        return [t for t, m, s in reversed(svc.made) if pred(m, s)]

    assert ids(listing(svc, status="failed")) == by(lambda m, s: s == "failed")
    assert ids(listing(svc, meta_part="shop")) == by(lambda m, s: m.startswith("shop/"))
    # '_' is a letter here, never LIKE's wildcard
    assert ids(listing(svc, meta_part="a_b")) == by(lambda m, s: m == "shop/a_b")
    assert ids(listing(svc, meta_part=["shop", "v1"])) == by(lambda m, s: m == "shop/v1")
    assert ids(listing(svc, account="studio")) == [svc.made[4][0]]
    recent = ids(listing(svc, created_since=time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(svc.since)) + f"{svc.since % 1:.6f}"[1:] + "Z"))
    assert recent[-3:] == [t for t, _, _ in reversed(svc.made[3:])]
    assert ids(listing(svc, created_since=str(svc.since)))[-3:] == recent[-3:]
    assert ids(listing(svc, status="done", meta_part="lab")) == [svc.made[5][0]]


def test_only_the_callers_threads(svc):
    studio = svc.auth(svc.studio_token)
    assert ids(listing(svc, studio)) == [svc.made[4][0]]
    assert ids(listing(svc, studio, account="studio")) == [svc.made[4][0]]
    assert listing(svc, studio, account="other").code == "wrong_account"
    rival = ids(listing(svc, svc.auth(svc.rival_token, "rival")))
    assert rival == [svc.rival_thread]
    assert svc.rival_thread not in ids(listing(svc, limit=100))
    assert listing(svc, account="nobody").code == "unknown_account"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("params, code", [
    ({"limit": "0"}, "invalid_limit"),
    ({"limit": "101"}, "invalid_limit"),
    ({"limit": "abc"}, "invalid_limit"),
    ({"limit": "-1"}, "invalid_limit"),
    ({"limit": "1e3"}, "invalid_limit"),
    ({"limit": "٣"}, "invalid_limit"),  # a digit, but not an ASCII one
    ({"limit": "9" * 5000}, "invalid_limit"),
    ({"cursor": "!!!"}, "invalid_cursor"),
    ({"cursor": "abc"}, "invalid_cursor"),
    ({"cursor": _b64(b"[1.5]")}, "invalid_cursor"),
    ({"cursor": _b64(b'[1.5, "../etc"]')}, "invalid_cursor"),
    ({"cursor": _b64(b'["x", "abc"]')}, "invalid_cursor"),
    ({"cursor": _b64(b'[1e999, "abc"]')}, "invalid_cursor"),
    ({"cursor": _b64(b"[" * 5000)}, "invalid_cursor"),
    ({"cursor": "A" * 5000}, "invalid_cursor"),
    ({"status": "running"}, "invalid_filter"),
    ({"meta_part": "../x"}, "invalid_filter"),
    ({"meta_part": [f"p{i}" for i in range(9)]}, "invalid_filter"),
    ({"created_since": "yesterday"}, "invalid_filter"),
    ({"created_since": "9" * 30}, "invalid_filter"),
])
def test_bad_parameters_are_400_with_a_code(svc, params, code):
    reply = listing(svc, **params)
    assert (reply.status, reply.code) == (400, code), reply.body
