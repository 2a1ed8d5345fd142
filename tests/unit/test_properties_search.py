"""Property: any query string given to the error search gives results or InvalidSearch (a 400
with a code) — never a database error (a 500), never a hang — on SQLite (FTS5 syntax) and on
PostgreSQL (web-search syntax)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilemore.errors import InvalidSearch
from tilemore.store import ErrorHit, ErrorRecord

BOUNDED = settings(max_examples=100, deadline=2000,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])

# FTS5's and websearch's syntax, and the columns, so that queries reach the parsers' corners.
TOKENS = ['"', "'", "*", "^", ":", "(", ")", "-", "+", "NEAR", "NEAR(", "AND", "OR", "NOT",
          "or", "and", "error_type:", "message:", "traceback:", "operator:", "task_id:",
          "rank:", "{message traceback}:", "-message:", "ZeroDivisionError", "broke", "run.py",
          "process", "\\", "%", "_", ";", "--", "/*", "'; DROP TABLE task_errors; --", "\x00",
          ",", ".", " ", "  ", "\t", "\n", "é", "日本", "🙂", "\ud7ff", "0", "1e999", "NULL"]
queries = (st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=30)
           .map("".join)
           | st.text(max_size=600)
           | st.lists(st.sampled_from(TOKENS), max_size=20).map(" ".join))


def error(thread: str, kind: str, message: str, operator: str = "explode") -> ErrorRecord:
    tb = (f'Traceback (most recent call last):\n  File "tilemore/engine/run.py", line 9, in '
          f"run\n    op.process(params)\n{kind}: {message}")
    return ErrorRecord("acme", "acme", thread, "boom", operator, kind, message, tb, 1, True,
                       1_700_000_000.0)


@pytest.fixture
def index(backend):
    index = backend.errors()
    for i, (kind, message) in enumerate([("ZeroDivisionError", "the operator broke"),
                                         ("ValueError", "bad pixels: NEAR the edge"),
                                         ("KeyError", "'message' and \"quotes\" * ^")]):
        index.record_error(error(f"t{i}", kind, message))
    return index


def search(index, query: str, **filters) -> None:
    started = time.monotonic()
    try:
        hits = index.search_errors(query, domain="acme", **filters)
    except InvalidSearch as err:
        assert err.status == 400 and err.code, err
    else:
        assert all(isinstance(h, ErrorHit) and h.record.domain == "acme" for h in hits)
    assert time.monotonic() - started < 2.0, query


@BOUNDED
@given(query=queries)
def test_any_query(index, query):
    search(index, query)


@BOUNDED
@given(query=queries, limit=st.integers(-5, 200),
       operator=st.none() | st.text(max_size=20), thread=st.none() | st.text(max_size=20))
def test_any_query_with_filters(index, query, limit, operator, thread):
    search(index, query, limit=limit, operator=operator, thread_id=thread)


@pytest.mark.parametrize("query, filters", [
    ("\x00", {}), ("broke\x00", {}), ("broke", {"operator": "ex\x00plode"}),
    ("broke", {"thread_id": "t\x00"})])
def test_nul_in_a_query_or_filter(index, query, filters):
    # No database takes a NUL (PostgreSQL would fail the request): refused with a code.
    with pytest.raises(InvalidSearch):
        index.search_errors(query, domain="acme", **filters)


def test_the_recorded_errors_are_found(index):
    assert [h.record.error_type for h in index.search_errors("broke", domain="acme")] == [
        "ZeroDivisionError"]
