"""PostgreSQL behind the same seam as :mod:`tilemore.store.sqlite_db`: ``_tx()``, ``_read()``
and ``_query()`` over the shared SQL, here on a small psycopg connection pool.

An unreachable server is :class:`DatabaseUnavailable` (HTTP 503 with Retry-After), never a
stuck process: the pool checks each connection before lending it, drops broken ones, and
keeps its reconnection backoff short, so requests succeed again on their own once the server
is back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from tilemore.errors import DatabaseUnavailable

TYPES = {"real": "DOUBLE PRECISION", "amount": "NUMERIC(38, 20)", "seq": "BIGINT PRIMARY KEY"}

CONNECT_TIMEOUT = 5  # seconds for one connection attempt (a firewalled host never refuses)
POOL_TIMEOUT = 3.0  # a caller waits this long for a working connection, then gets a 503
# Once the server has failed, callers within FAIL_FAST seconds get their 503 at once, and
# the next one waits only PROBE_TIMEOUT: the API reads on its event loop, which an outage
# must not stall for everyone.
FAIL_FAST = 1.0
PROBE_TIMEOUT = 1.0
# psycopg_pool backs off exponentially between reconnection attempts until this many
# seconds, then gives up and reconnects on the next demand: a long outage cannot leave the
# pool sleeping for minutes after the server is back.
RECONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 8  # per process and database object; statements are short
SCHEMA_LOCK = 0x746D5F73  # advisory lock: one process at a time creates the schema

# Server gone, restarting, refusing connections, or no connection free in time.
UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)


@functools.lru_cache(maxsize=1024)
def _dialect(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """A psycopg connection that speaks the shared SQL, like ``sqlite3.Connection``."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(_dialect(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(_dialect(sql), rows)


def _add_column(conn: psycopg.Connection[Any], table: str, column: str, kind: str) -> None:
    # Looked up first: ALTER TABLE takes an exclusive lock on the table even when IF NOT
    # EXISTS makes it a no-op, and would queue every reader behind a long transaction.
    present = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %s AND column_name = %s", (table, column)).fetchone()
    if present is None:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")


def describe(url: str) -> str:
    """Where a URL points, without its password: ``host:port/database``."""
    parts = conninfo_to_dict(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresDatabase:
    def __init__(self, url: str, schema: str, write_lock: int | None = None,
                 added_columns: Sequence[tuple[str, str, str]] = (),
                 migrate: Callable[[Connection], None] | None = None) -> None:
        """``write_lock``: an advisory lock key every write transaction takes first, where
        writes read-then-write shared state (the ledger's chain and balances) and must be
        serialised as SQLite's ``BEGIN IMMEDIATE`` serialises them. ``added_columns``:
        (table, column, type) that a database made by an older release lacks."""
        self.url = url
        self.where = describe(url)
        self._write_lock = write_lock
        self._failed: tuple[float, str] | None = None  # when, and the error callers got
        try:  # a direct connection first: a wrong URL fails the start with its real reason
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(schema.format(**TYPES))
                    for table, column, kind in added_columns:
                        _add_column(conn, table, column, kind.format(**TYPES))
                    if migrate is not None:
                        conn.row_factory = dict_row
                        migrate(Connection(conn))
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        self._pool = ConnectionPool(
            url, min_size=1, max_size=MAX_CONNECTIONS, timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT, check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": CONNECT_TIMEOUT},
            num_workers=2, name=f"tilemore {self.where}", open=False)
        self._pool.open(wait=False)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        failed = self._failed
        if failed is not None and time.monotonic() - failed[0] < FAIL_FAST:
            raise DatabaseUnavailable(failed[1])
        conn: psycopg.Connection[Any] | None = None
        try:
            with self._pool.connection(POOL_TIMEOUT if failed is None else PROBE_TIMEOUT) as conn:
                self._failed = None  # a checked connection: the server answers
                yield conn
        except UNAVAILABLE as exc:
            error = self._unavailable(exc)
            # The server gone, not one statement (a deadlock, a cancelled query) failing.
            if conn is None or conn.broken or conn.closed:
                self._failed = (time.monotonic(), error.message)
            raise error from exc

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            if self._write_lock is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_lock,))
            yield Connection(conn)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """Several reads from one snapshot (a thread and its tasks, the ledger and the
        balances it verifies)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield Connection(conn)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._connection() as conn:
            return conn.execute(_dialect(sql), tuple(args)).fetchall()

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unavailable(self, exc: Exception) -> DatabaseUnavailable:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return DatabaseUnavailable(f"PostgreSQL at {self.where} is unavailable: {reason}")
