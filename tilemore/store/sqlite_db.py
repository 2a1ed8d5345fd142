"""One SQLite file shared by every process of a service: WAL mode, commits fsync'd
(``synchronous=FULL``) before they return, one write connection per process behind a lock,
writes that belong together in one ``BEGIN IMMEDIATE`` transaction, and a read connection
per thread (WAL readers never wait for writers). A lock held past ``busy_seconds``, a full
or unreadable disk, is a 503 (:class:`~tilemore.errors.DatabaseUnavailable`), not a 500.

Closing waits for each connection's call in flight (a read on another thread: SQLite frees
a connection's statements on close, and a query running on one would read freed memory);
a call after close is a 503 too.

The stores' SQL is written once for SQLite and PostgreSQL (:mod:`tilemore.store.postgres_db`
is the other side of this seam): ``?`` placeholders, rows read by column name, and schemas
with ``{real}``, ``{amount}`` and ``{seq}`` where the two dialects' types differ.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from tilemore.errors import DatabaseBusy, DatabaseFull, DatabaseUnavailable

TYPES = {"real": "REAL", "amount": "TEXT", "seq": "INTEGER PRIMARY KEY AUTOINCREMENT"}


class _Connection:
    """A connection and the lock its calls hold, so that close never cuts one short."""

    def __init__(self, db: sqlite3.Connection) -> None:
        # reentrant: a query within a snapshot read, on the same thread
        self.db, self.lock, self.closed = db, threading.RLock(), False

    @contextmanager
    def use(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            if self.closed:
                raise DatabaseUnavailable("the database was closed (the service is stopping)")
            yield self.db

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.db.close()


class SQLiteDatabase:
    def __init__(self, path: Path | str, schema: str,
                 added_columns: Sequence[tuple[str, str, str]] = (),
                 busy_seconds: float = 5.0,
                 migrate: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """``added_columns``: (table, column, type) that a file made by an older release
        lacks; each missing one is added (SQLite has no ``ADD COLUMN IF NOT EXISTS``).
        ``busy_seconds``: how long a write waits for the file's lock before it gives up
        with :class:`DatabaseBusy` (a 503 with Retry-After, never a request held for long)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_seconds = busy_seconds
        self._connections: list[_Connection] = []
        self._readers = threading.local()
        self._db = self._connect()
        self._closed = False
        self._lock = threading.RLock()
        with self._lock, _unavailable_mapped():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(schema.format(**TYPES))
            for table, column, kind in added_columns:
                self._add_column(table, column, kind.format(**TYPES))
        if migrate is not None:  # what a file made by an older release needs changed
            with self._tx() as db:
                migrate(db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self._busy_seconds)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _reader(self) -> _Connection:
        """This thread's own connection for reads: in WAL mode readers never wait for a
        writer, so a read must not queue behind this process's writes either."""
        reader = getattr(self._readers, "db", None)
        if reader is None:
            with self._lock:  # close() walks the list
                if self._closed:
                    raise DatabaseUnavailable("the database was closed (the service is "
                                              "stopping)")
                reader = self._readers.db = _Connection(self._connect())
                self._connections.append(reader)
        return reader

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
        with self._lock, _unavailable_mapped():
            if self._closed:
                raise DatabaseUnavailable("the database was closed (the service is stopping)")
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
        with self._reader().use() as db, _unavailable_mapped():
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("ROLLBACK")  # nothing to keep: it only read

    def _query(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._reader().use() as db, _unavailable_mapped():
            return db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:  # a write under way finishes first; none starts after
            self._closed = True
            readers = list(self._connections)
            self._db.close()
        for reader in readers:  # each after its call in flight, if any
            reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _unavailable_mapped() -> Iterator[None]:
    """The file's own troubles as the 503s they are: busy past the wait, disk full, disk
    unreadable. Constraint violations and bad SQL stay what they are."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise DatabaseBusy("the database is busy; try again shortly") from exc
        if "full" in text:
            raise DatabaseFull("the database's disk is full") from exc
        if "disk i/o" in text or "unable to open" in text:
            raise DatabaseUnavailable(f"the database cannot be read: {exc}") from exc
        raise
