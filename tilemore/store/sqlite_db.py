"""One SQLite file shared by every process of a service: WAL mode, commits fsync'd
(``synchronous=FULL``) before they return, one connection per process behind a lock, and
writes that belong together in one ``BEGIN IMMEDIATE`` transaction.

The stores' SQL is written once for SQLite and PostgreSQL (:mod:`tilemore.store.postgres_db`
is the other side of this seam): ``?`` placeholders, rows read by column name, and schemas
with ``{real}``, ``{amount}`` and ``{seq}`` where the two dialects' types differ.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

TYPES = {"real": "REAL", "amount": "TEXT", "seq": "INTEGER PRIMARY KEY AUTOINCREMENT"}


class SQLiteDatabase:
    def __init__(self, path: Path | str, schema: str,
                 added_columns: Sequence[tuple[str, str, str]] = ()) -> None:
        """``added_columns``: (table, column, type) that a file made by an older release
        lacks; each missing one is added (SQLite has no ``ADD COLUMN IF NOT EXISTS``)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(schema.format(**TYPES))
            for table, column, kind in added_columns:
                self._add_column(table, column, kind.format(**TYPES))

    def _add_column(self, table: str, column: str, kind: str) -> None:
        present = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
        if column in present:
            return
        try:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:  # another process added it meanwhile
            if "duplicate column" not in str(exc):
                raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; ``BEGIN IMMEDIATE`` takes the file's write lock up front, so
        read-then-write sequences (balances, the hash chain) are serialised."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Several reads from one snapshot: a read transaction (in WAL mode, a reader sees
        the file as of its first read, whatever other processes commit meanwhile)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("ROLLBACK")  # nothing to keep: it only read

    def _query(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
