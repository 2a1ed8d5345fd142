"""``GET /errors`` over real HTTP, on SQLite and on PostgreSQL: a failing thread's retried
attempts and final failure are indexed and found within the caller's domain (a sub-account:
its own), written as ECS lines, and bad searches are 4xx with a code."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import pytest
from support.backends import NAMES, Backend
from support.images import encode, noisy, photo
from support.service_harness import Service, http

BROKEN = Path(__file__).parents[1] / "data" / "broken.yaml"


@pytest.fixture(scope="module", params=NAMES)
def svc(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"errors-{request.param}")
    db = Backend.of(request, root / "db")
    s = Service(root, database_url=db.url, pipeline_paths=[BROKEN],
                errors_log_path=root / "logs" / "errors.ndjson")
    s.store.create_subaccount("acme", "studio")
    s.billing.payment("acme", "acme/studio", "p1", Decimal("100"))  # from acme's credits
    _, s.studio_token = s.store.issue_token("acme", "acme/studio")
    s.failed = fail(s, 1)  # the domain's own
    s.studio_failed = fail(s, 2, account="studio")  # billed to its sub-account
    yield s
    s.close()
    db.close()


def fail(svc, seed: int, **envelope) -> str:
    image = encode(noisy(photo(48, 32), 10, seed=seed), "PNG")
    sent = svc.submit(image, {"adjustments": {}, "pipeline": "broken", **envelope})
    thread_id = sent.json()["thread_id"]
    assert svc.wait(thread_id)["status"] == "failed"
    return thread_id


def search(svc, auth=None, **params):
    headers = svc.auth() if auth is None else auth
    return http("GET", f"{svc.url}/errors?{urlencode(params)}", headers=headers)


def test_retries_and_the_final_failure_are_found(svc):
    reply = search(svc, q="ZeroDivisionError", thread_id=svc.failed)
    assert reply.status == 200, reply.body
    found = reply.json()["errors"]
    # explode fails 3 times (2 retries): newest first among equals, the final one on top
    assert [(e["attempt"], e["final"]) for e in found] == [(3, True), (2, False), (1, False)]
    first = found[0]
    assert (first["thread_id"], first["task_id"], first["operator"]) == (
        svc.failed, "boom", "explode")
    assert first["type"] == "ZeroDivisionError" and first["message"] == "the operator broke"
    assert 'raise ZeroDivisionError("the operator broke")' in first["traceback"]
    assert "«" in first["snippet"] and first["time"].endswith("Z")
    assert first["account"] == "acme" and first["domain"] == "acme"


def test_a_domain_sees_its_sub_accounts_errors_a_sub_account_only_its_own(svc):
    def threads(auth=None, **params):
        return {e["thread_id"] for e in search(svc, auth, q="operator broke", limit=100,
                                               **params).json()["errors"]}

    assert threads() == {svc.failed, svc.studio_failed}
    assert threads(operator="explode") == {svc.failed, svc.studio_failed}
    assert threads(operator="decode") == set()
    studio = svc.auth(svc.studio_token)
    assert threads(studio) == {svc.studio_failed}
    assert threads(svc.auth(svc.rival_token, "rival")) == set()


def test_limit_caps_the_results(svc):
    found = search(svc, q="broke", limit=2).json()
    assert found["count"] == 2 and len(found["errors"]) == 2


@pytest.mark.parametrize("params, status, code", [
    ({}, 400, "empty_query"),
    ({"q": "  "}, 400, "empty_query"),
    ({"q": "!!!"}, 400, "invalid_query"),
    ({"q": "x" * 600}, 400, "invalid_query"),
    ({"q": "broke", "limit": "0"}, 400, "invalid_limit"),
    ({"q": "broke", "limit": "101"}, 400, "invalid_limit"),
    ({"q": "broke", "limit": "ten"}, 400, "invalid_limit"),
    ({"q": "broke", "thread_id": "no-such-thread"}, 404, "unknown_thread"),
])
def test_bad_searches_are_4xx_with_a_code(svc, params, status, code):
    reply = search(svc, **params)
    assert (reply.status, reply.code) == (status, code), reply.body
    assert reply.json()["error"]["message"]


def test_fts5_syntax_it_cannot_parse_is_a_400(svc):
    reply = search(svc, q="broke AND")
    if svc.settings.database_url:  # web-search syntax: anything parses
        assert reply.status == 200
    else:
        assert (reply.status, reply.code) == (400, "invalid_query")
        assert "double quotes" in reply.json()["error"]["message"]


def test_another_domains_or_accounts_errors_are_forbidden(svc):
    rival = svc.auth(svc.rival_token, "rival")
    assert search(svc, rival, q="broke", thread_id=svc.failed).code == "wrong_domain"
    studio = svc.auth(svc.studio_token)
    assert search(svc, studio, q="broke", thread_id=svc.failed).code == "wrong_account"
    assert search(svc, studio, q="broke", thread_id=svc.studio_failed).status == 200
    assert search(svc, {}, q="broke").code == "missing_credentials"
    assert search(svc, svc.auth(svc.rival_token), q="broke").code == "wrong_domain"


def test_each_error_is_one_ecs_line(svc):
    lines = (svc.settings.data_dir / "logs" / "errors.ndjson").read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    mine = [d for d in docs if d["labels"]["thread_id"] == svc.failed]
    assert [d["labels"]["attempt"] for d in mine] == ["1", "2", "3"]
    assert [d["log.level"] for d in mine] == ["warning", "warning", "error"]
    last = mine[-1]
    assert last["error"]["type"] == "ZeroDivisionError"
    assert last["error"]["message"] == "the operator broke"
    assert "the operator broke" in last["error"]["stack_trace"]
    assert last["service"]["name"] == "tilemore"
    assert last["event"]["dataset"] == "tilemore.errors"
    assert last["labels"]["domain"] == "acme" and last["labels"]["operator"] == "explode"
    assert "trace" not in last and last["@timestamp"].endswith("Z")
