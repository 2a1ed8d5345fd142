"""The error index on both databases: what is recorded, how it ranks and filters, and the
searches it refuses (a 400 with a code, never a database error)."""

from __future__ import annotations

import pytest
from support.error_records import error

from tilemore.errors import InvalidSearch


@pytest.fixture
def index(backend):
    return backend.errors()


def test_recorded_whole_and_found_by_type_message_or_traceback(index):
    index.record_error(error(attempt=1, final=False))
    index.record_error(error(attempt=2, final=False, at=1_700_000_001.0))
    index.record_error(error(attempt=3, final=True, at=1_700_000_002.0))
    for query in ("ZeroDivisionError", "operator broke", '"the operator broke"', "host",
                  "explode"):
        hits = index.search_errors(query, domain="acme")
        assert [h.record.attempt for h in hits] == [3, 2, 1], query  # equals: newest first
    hit = index.search_errors("ZeroDivisionError", domain="acme")[0]
    assert hit.record == error(attempt=3, final=True, at=1_700_000_002.0)
    assert "«ZeroDivisionError»" in hit.snippet
    assert [h.record.final for h in index.search_errors("broke", domain="acme")] == [
        True, False, False]


def test_ranked_by_relevance(index):
    # Newer, but the query's word only in its traceback's source lines:
    index.record_error(error("t1", kind="ValueError", message="bad pixels", at=2e9))
    index.record_error(error("t2", kind="KeyError", message="process failed in process",
                             at=1e9))
    assert [h.record.thread_id for h in index.search_errors("process", domain="acme")] == [
        "t2", "t1"]
    scores = [h.score for h in index.search_errors("process", domain="acme")]
    assert scores[0] > scores[1]


def test_filters_and_domains(index):
    index.record_error(error("t1"))
    index.record_error(error("t2", account="acme/studio", operator="nlmeans"))
    index.record_error(error("t3", domain="rival"))
    def threads(**filters):
        return sorted(h.record.thread_id for h in index.search_errors("broke", **filters))
    assert threads(domain="acme") == ["t1", "t2"]
    assert threads(domain="rival") == ["t3"]
    assert threads(domain=None) == ["t1", "t2", "t3"]  # the admin's CLI: every domain
    assert threads(domain="acme", account="acme/studio") == ["t2"]
    assert threads(domain="acme", thread_id="t1") == ["t1"]
    assert threads(domain="acme", operator="nlmeans") == ["t2"]
    assert threads(domain="rival", thread_id="t1") == []
    assert threads(domain="acme", limit=1) in (["t1"], ["t2"])
    assert index.search_errors("nowhere", domain="acme") == []


def test_kept_across_reopening(backend):
    backend.errors().record_error(error())
    assert len(backend.errors().search_errors("broke", domain="acme")) == 1


@pytest.mark.parametrize("query, limit, code", [
    ("", 20, "empty_query"),
    ("   \n", 20, "empty_query"),
    ("x" * 501, 20, "invalid_query"),
    ("!!!", 20, "invalid_query"),  # no word at all: FTS5 refuses it, PostgreSQL has none
    ("broke", 0, "invalid_limit"),
    ("broke", 101, "invalid_limit"),
])
def test_refused_searches(index, query, limit, code):
    index.record_error(error())
    with pytest.raises(InvalidSearch) as caught:
        index.search_errors(query, domain="acme", limit=limit)
    assert caught.value.code == code and caught.value.status == 400


@pytest.mark.parametrize("query", ["foo AND", '"unterminated', "host.py", "nosuch:word",
                                   "NOT broke"])
def test_each_backends_own_syntax(backend, index, query):
    """FTS5 refuses what it cannot parse (a 400 that says to quote); PostgreSQL's web-search
    syntax parses anything and just searches."""
    index.record_error(error())
    if backend.name == "sqlite":
        with pytest.raises(InvalidSearch, match="does not parse") as caught:
            index.search_errors(query, domain="acme")
        assert caught.value.code == "invalid_query"
    else:
        assert isinstance(index.search_errors(query, domain="acme"), list)
