"""``tilemore errors search`` on a real index (SQLite, and PostgreSQL through
TILEMORE_DATABASE_URL)."""

from __future__ import annotations

import json

import pytest
from support.cli import run
from support.error_records import error


@pytest.fixture
def db(backend, monkeypatch):
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    store = backend.store()
    store.create_domain("acme")
    store.create_domain("rival")
    index = backend.errors()
    index.record_error(error("thread-one-long-id", attempt=1, final=False))
    index.record_error(error("thread-one-long-id", attempt=2, final=True, at=1_700_000_001.0))
    index.record_error(error("thread-two", domain="rival", kind="KeyError",
                             message="no such tile"))
    return backend


def test_a_table_of_matches(capsys, db):
    code, out, _ = run(capsys, "errors", "search", "ZeroDivisionError")
    assert code == 0
    assert "errors matching 'ZeroDivisionError': 2" in out
    assert "thread-one-l" in out and "explode" in out and "2 final" in out
    assert "2023-11-14T22:13:21.000Z" in out  # newest first
    assert out.index("2 final") < out.index("2023-11-14T22:13:20.000Z")
    assert "KeyError" not in out


def test_json_every_domain_or_one(capsys, db):
    code, out, _ = run(capsys, "errors", "search", "operator OR tile", "--json")
    assert code == 0
    body = json.loads(out)
    assert body["count"] == 3 and {e["domain"] for e in body["errors"]} == {"acme", "rival"}
    first = body["errors"][0]
    assert {"time", "thread_id", "task_id", "operator", "type", "message", "traceback",
            "attempt", "final", "snippet", "score"} <= set(first)
    body = json.loads(run(capsys, "errors", "search", "tile", "--json", "-d", "rival")[1])
    assert [e["type"] for e in body["errors"]] == ["KeyError"]
    assert "«tile»" in body["errors"][0]["snippet"]
    body = json.loads(run(capsys, "errors", "search", "broke", "--json", "-n", "1")[1])
    assert body["count"] == 1 and body["errors"][0]["final"] is True


@pytest.mark.parametrize("argv, words", [
    (["errors", "search", "broke", "-d", "nobody"], "no domain 'nobody'"),
    (["errors", "search", " "], "[empty_query]"),
    (["errors", "search", "broke", "--limit", "0"], "[invalid_limit]"),
    (["errors", "search", "!!!"], "[invalid_query]"),
])
def test_bad_input_is_one_line(capsys, db, argv, words):
    code, _, err = run(capsys, *argv)
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1
