"""One SQLite file shared by every process of a service: WAL mode, commits fsync'd
(``synchronous=FULL``) before they return, writes that belong together in one ``BEGIN
IMMEDIATE`` transaction, and reads on read connections of their own (WAL readers never wait
for writers). A lock held past ``busy_seconds``, a full or unreadable disk, is a 503
(:class:`~tilemore.errors.DatabaseUnavailable`), not a 500.

Writers wait for each other without SQLite's own busy handler, which sleeps 1, 2, 5, 10, 15…
ms between tries: with the ingress, a conductor and the billing actor each committing a few
hundred small transactions a second, most waits were for a lock freed within a millisecond,
and a write waited up to ten times that. In a process, every store on the file (the registry,
the ledger, the lifecycle, the error index) takes one shared lock before it writes, so they
queue on it rather than on the file; between processes, ``BEGIN IMMEDIATE`` is retried every
0.1 ms at first, doubling up to 1 ms.

Read connections are kept in a pool and lent to one read at a time, never closed while the
database is open: SQLite keeps a closed connection's file handles until every connection of
the process to that file has closed (closing them would drop the others' POSIX locks), so a
connection per short-lived thread leaked thousands of handles. A connection lent out when
the database closes is closed by its borrower when the read is over (closing it under a
running query would free memory the query reads); a read after close is a 503 too.

The stores' SQL is written once for SQLite and PostgreSQL (:mod:`tilemore.store.postgres_db`
is the other side of this seam): ``?`` placeholders, rows read by column name, and schemas
with ``{real}``, ``{amount}`` and ``{seq}`` where the two dialects' types differ.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from tilemore.errors import DatabaseBusy, DatabaseFull, DatabaseUnavailable

TYPES = {"real": "REAL", "amount": "TEXT", "seq": "INTEGER PRIMARY KEY AUTOINCREMENT"}
FIRST_RETRY_SECONDS = 0.0001  # a write lock another process holds: tried again this soon,
LAST_RETRY_SECONDS = 0.001  # the wait doubling up to this

_write_locks: dict[Path, threading.RLock] = {}  # a file → its writers' lock in this process
_write_locks_guard = threading.Lock()


def _write_lock(path: Path) -> threading.RLock:
    with _write_locks_guard:
        return _write_locks.setdefault(path.resolve(), threading.RLock())


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
        self._idle: list[sqlite3.Connection] = []  # read connections not lent out
        # the pool's own lock: a read never waits for this process's write under way
        self._lent = threading.local()  # the connection this thread's read holds
        self._db = self._connect()
        self._closed = False
        self._lock = _write_lock(self.path)  # shared with the other stores on this file
        self._pool_lock = threading.Lock()
        with self._lock, _unavailable_mapped():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(schema.format(**TYPES))
            for table, column, kind in added_columns:
                self._add_column(table, column, kind.format(**TYPES))
        if migrate is not None:  # what a file made by an older release needs changed
            with self._tx() as db:
                migrate(db)
        # From here on a write waits for the lock in _begin, not in SQLite's busy handler
        # (only BEGIN IMMEDIATE waits: in WAL mode, a transaction holding the write lock
        # never meets SQLITE_BUSY again).
        self._db.execute("PRAGMA busy_timeout = 0")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self._busy_seconds)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read connection, lent for one read (a query within a snapshot read on the same
        thread gets the snapshot's own)."""
        held = getattr(self._lent, "db", None)
        if held is not None:
            yield held
            return
        with self._pool_lock:
            if self._closed:
                raise DatabaseUnavailable("the database was closed (the service is stopping)")
            db = self._idle.pop() if self._idle else None
        if db is None:
            with _unavailable_mapped():
                db = self._connect()
        self._lent.db = db
        try:
            yield db
        finally:
            self._lent.db = None
            with self._pool_lock:
                if self._closed:
                    db.close()
                else:
                    self._idle.append(db)

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
        if not self._lock.acquire(timeout=self._busy_seconds):  # this process's other writes
            raise DatabaseBusy("the database is busy; try again shortly")
        try:
            with _unavailable_mapped():
                if self._closed:
                    raise DatabaseUnavailable("the database was closed (the service is "
                                              "stopping)")
                self._begin()
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        finally:
            self._lock.release()

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, tried again until another process's write is over, for
        ``busy_seconds`` at most (then the ``database is locked`` error, a 503)."""
        deadline = time.monotonic() + self._busy_seconds
        wait = FIRST_RETRY_SECONDS
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(wait)
            wait = min(wait * 2, LAST_RETRY_SECONDS)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Several reads from one snapshot: a read transaction (in WAL mode, a reader sees
        the file as of its first read, whatever other processes commit meanwhile)."""
        with self._reader() as db, _unavailable_mapped():
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("ROLLBACK")  # nothing to keep: it only read

    def _query(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._reader() as db, _unavailable_mapped():
            return db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock, self._pool_lock:  # a write under way finishes first
            self._closed = True
            self._db.close()
            for db in self._idle:  # those lent out are closed by their borrowers
                db.close()
            self._idle.clear()

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
