"""The store on PostgreSQL (``TILEMORE_DATABASE_URL``): the same SQL, records and guarantees
as the embedded SQLite store, for services whose processes span machines."""

from __future__ import annotations

from tilemore.store.postgres_db import PostgresDatabase
from tilemore.store.sql import ADDED_COLUMNS, SCHEMA, SQLStore, migrate_postgres


class PostgresStore(SQLStore, PostgresDatabase):
    """Implements both :class:`ThreadRepository` and :class:`TokenRepository`. Concurrent
    inserts of one idempotency key from many processes meet at the UNIQUE constraint
    (``ON CONFLICT DO NOTHING`` waits for the other transaction), so one thread exists."""

    skip_locked = " FOR UPDATE OF threads SKIP LOCKED"  # conductors claim without waiting
    # A thread quota's count and insert, one domain at a time (SQLite's write lock does it
    # there); the key's second half is the domain's hash.
    domain_lock = "SELECT pg_advisory_xact_lock(1953332332, hashtext(?))"
    outbox_lock = " FOR UPDATE SKIP LOCKED"  # deliverers claim different webhook deliveries

    def __init__(self, url: str) -> None:
        PostgresDatabase.__init__(self, url, SCHEMA, added_columns=ADDED_COLUMNS,
                                  migrate=migrate_postgres)
