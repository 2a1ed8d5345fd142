"""The index of failed tasks' errors, written once for both backends: the table, the
checks on a search, the filters; :mod:`tilemore.store.error_index_sqlite` (FTS5) and
:mod:`tilemore.store.error_index_postgres` (``tsvector``) each add their full-text match.

Every failed run of a task is a row: retried attempts and the failure that ended a thread,
with the exception's type, message and traceback. Rows are only ever inserted.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from tilemore.errors import InvalidSearch
from tilemore.settings_parts import DatabaseSettings
from tilemore.store import ErrorHit, ErrorRecord

MAX_LIMIT = 100
MAX_QUERY = 500  # characters; a stack-trace search needs a few words, not a page
MARK = ("«", "»")  # around matched words in snippets: rare in tracebacks, unlike <> or []

# The columns an insert gives and a search reads, in this order.
COLUMNS = ("domain", "account", "thread_id", "task_id", "operator", "error_type", "message",
           "traceback", "attempt", "final", "at")


def table(id_column: str, flag: str, search_column: str = "") -> str:
    """The errors table in a dialect: its id column, its boolean type and any generated
    search column; ``{real}`` is left for the database to fill in."""
    return f"""
CREATE TABLE IF NOT EXISTS task_errors (
    id {id_column},
    domain TEXT NOT NULL,
    account TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    operator TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    final {flag} NOT NULL,
    at {{real}} NOT NULL{search_column}
);
CREATE INDEX IF NOT EXISTS task_errors_by_thread ON task_errors(thread_id);
"""


INSERT = (f"INSERT INTO task_errors ({', '.join(COLUMNS)})"
          f" VALUES ({', '.join('?' for _ in COLUMNS)})")


def check_search(query: str | None, limit: int) -> str:
    """The query, stripped; an :class:`InvalidSearch` when it or the limit cannot be used."""
    text = (query or "").strip()
    if not text:
        raise InvalidSearch("give a query: words to find in errors' types, messages and "
                            "tracebacks", code="empty_query")
    if "\x00" in text:  # no database takes it; PostgreSQL would fail the whole request
        raise InvalidSearch("the query contains a NUL character")
    if len(text) > MAX_QUERY:
        raise InvalidSearch(f"the query is {len(text)} characters long; at most {MAX_QUERY}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidSearch(f"limit must be from 1 to {MAX_LIMIT}, got {limit}",
                            code="invalid_limit")
    return text


def filters(domain: str | None, account: str | None, thread_id: str | None,
            operator: str | None) -> tuple[str, list[Any]]:
    """``AND …`` conditions on ``e`` (the errors table) for the filters given, and their
    arguments."""
    where, args = [], []
    for column, value in (("domain", domain), ("account", account),
                          ("thread_id", thread_id), ("operator", operator)):
        if value is not None:
            if "\x00" in value or len(value) > 200:
                raise InvalidSearch(f"{column}: not a name this index holds",
                                    code="invalid_filter")
            where.append(f" AND e.{column} = ?")
            args.append(value)
    return "".join(where), args


def hit(row: Any) -> ErrorHit:
    values = {c: row[c] for c in COLUMNS}
    values["final"] = bool(values["final"])
    return ErrorHit(row["id"], ErrorRecord(**values), float(row["score"]), row["snippet"])


class ErrorIndexSQL:
    """Implements :class:`~tilemore.store.ErrorIndex` over a database the subclass supplies
    (``_tx``, ``_query``); the subclass writes the full-text part of a search (``_match``)."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]

    def record_error(self, error: ErrorRecord) -> None:
        with self._tx() as db:
            db.execute(INSERT, tuple(getattr(error, c) for c in COLUMNS))

    def search_errors(self, query: str, *, domain: str | None, account: str | None = None,
                      thread_id: str | None = None, operator: str | None = None,
                      limit: int = 20) -> list[ErrorHit]:
        text = check_search(query, limit)
        where, args = filters(domain, account, thread_id, operator)
        return [hit(r) for r in self._match(text, where, args, limit)]

    def _match(self, query: str, where: str, args: list[Any], limit: int) -> list[Any]:
        """Rows of ``e.*`` with ``score`` (higher is better) and ``snippet``, best first,
        newest first among equals."""
        raise NotImplementedError


def open_error_index(db: DatabaseSettings) -> ErrorIndexSQL:
    """The configured index (``settings.db``): PostgreSQL when ``database_url`` is set, else
    the SQLite file beside the store's records."""
    if db.database_url:
        from tilemore.store.error_index_postgres import PostgresErrorIndex

        return PostgresErrorIndex(db.database_url)
    from tilemore.store.error_index_sqlite import SQLiteErrorIndex

    return SQLiteErrorIndex(db.database_path)
