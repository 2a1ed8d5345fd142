"""The error index in the embedded SQLite file: an external-content FTS5 table over
``task_errors``, filled by a trigger in the same transaction as each insert.

Queries are FTS5's own syntax: words (all must match), ``"quoted phrases"``, ``OR``, ``NOT``,
``prefix*``, ``column:word`` (``error_type``, ``message``, ``traceback``, ``operator``,
``task_id``). What FTS5 cannot parse is an :class:`~tilemore.errors.InvalidSearch`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tilemore.errors import InvalidSearch
from tilemore.store.error_index import MARK, ErrorIndexSQL, table
from tilemore.store.sqlite_db import SQLiteDatabase

FTS_COLUMNS = "error_type, message, traceback, operator, task_id"
# bm25 weights, in FTS_COLUMNS' order: the exception's type and message say more than a
# word somewhere in a traceback's source lines.
WEIGHTS = "8.0, 4.0, 1.0, 2.0, 2.0"

SCHEMA = table("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER") + f"""
CREATE VIRTUAL TABLE IF NOT EXISTS task_errors_fts USING fts5(
    {FTS_COLUMNS}, content='task_errors', content_rowid='id', tokenize='unicode61');
CREATE TRIGGER IF NOT EXISTS task_errors_indexed AFTER INSERT ON task_errors BEGIN
    INSERT INTO task_errors_fts (rowid, {FTS_COLUMNS})
        VALUES (new.id, new.error_type, new.message, new.traceback, new.operator, new.task_id);
END;
"""

SEARCH = f"""
SELECT e.*, -bm25(task_errors_fts, {WEIGHTS}) AS score,
       snippet(task_errors_fts, -1, '{MARK[0]}', '{MARK[1]}', '…', 16) AS snippet
FROM task_errors_fts JOIN task_errors e ON e.id = task_errors_fts.rowid
WHERE task_errors_fts MATCH ?{{where}}
ORDER BY score DESC, e.at DESC, e.id DESC
LIMIT ?
"""

# How FTS5 says a query does not parse (sqlite3 raises OperationalError for these, as it
# does for a locked or broken file, which must stay an error of ours).
SYNTAX = ("fts5:", "no such column", "unterminated string", "unknown special query")


class SQLiteErrorIndex(ErrorIndexSQL, SQLiteDatabase):
    def __init__(self, path: Path | str) -> None:
        SQLiteDatabase.__init__(self, path, SCHEMA)

    def _match(self, query: str, where: str, args: list[Any], limit: int) -> list[Any]:
        try:
            return self._query(SEARCH.format(where=where), [query, *args, limit])
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith(SYNTAX):
                raise
            raise InvalidSearch(
                f"the query does not parse ({exc}); put words with punctuation in double "
                'quotes, e.g. "run.py"') from None
