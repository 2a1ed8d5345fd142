"""The ledger in PostgreSQL: amounts ``NUMERIC(38, 20)`` (18 integer and 20 fractional
digits, exact), the same SQL, hash chain and verification as the SQLite ledger
(:class:`~tilemore.billing.ledger.Ledger`).

Append-only is the database's rule here too: a plpgsql trigger raises on UPDATE, DELETE and
TRUNCATE of ``ledger``. Every write transaction first takes one advisory lock, so appends
and reservations from many processes are serialised as SQLite's ``BEGIN IMMEDIATE``
serialises them: the chain cannot fork and a balance cannot be spent twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tilemore.billing.ledger import ADDED_COLUMNS, SCHEMA, Ledger
from tilemore.store.postgres_db import PostgresDatabase

LEDGER_LOCK = 0x746D5F6C  # advisory lock key of the ledger's writers

# The error is class 23 (integrity constraint violation), as SQLite's RAISE(ABORT) is an
# IntegrityError: callers see the same kind of refusal from either database.
TRIGGERS = """
CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'restrict_violation';
END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass
                   AND tgname = 'ledger_no_update') THEN
        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass
                   AND tgname = 'ledger_no_delete') THEN
        CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass
                   AND tgname = 'ledger_no_truncate') THEN
        CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
    END IF;
END $$;
"""


class PostgresLedger(Ledger, PostgresDatabase):
    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        PostgresDatabase.__init__(self, url, SCHEMA + TRIGGERS, write_lock=LEDGER_LOCK,
                                  added_columns=ADDED_COLUMNS)
        self._clock = clock
