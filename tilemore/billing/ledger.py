"""The append-only ledger: every credit movement is an entry, chained to the one before by a
hash, so a changed or missing entry is detectable (:meth:`Ledger.verify`).

The database itself refuses UPDATE and DELETE on entries (triggers); corrections are new
entries. Balances and per-day totals are kept beside the ledger in the same transaction as
each append — derived data, which ``verify`` recomputes from the entries and compares.
A charge is keyed by (thread, task): a retried or replayed task cannot be charged twice.

:class:`Ledger` is the SQL, written once; :class:`SQLiteLedger` keeps it in the embedded
SQLite file and :class:`~tilemore.billing.postgres.PostgresLedger` in PostgreSQL
(``NUMERIC(38, 20)`` amounts). :func:`open_ledger` picks the one the settings name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

from tilemore.billing.entries import (
    DAILY_TOTALS,
    GENESIS,
    Appended,
    DuplicateReference,
    Entry,
    InsufficientCredits,
    Kind,
    Row,
    Settlement,
    Verification,
    daily_delta,
    daily_total,
    day_of,
    entry_hash,
    verify_rows,
)
from tilemore.billing.holds import Holds, balance_in, held_in
from tilemore.billing.money import CTX, ZERO, add, check_range, fmt
from tilemore.settings_parts import DatabaseSettings
from tilemore.store.leases import fence
from tilemore.store.sqlite_db import SQLiteDatabase

__all__ = [
    "Appended", "DuplicateReference", "Entry", "InsufficientCredits", "Kind", "Ledger",
    "SQLiteLedger", "Verification", "day_of", "entry_hash", "open_ledger",
]

# Amounts are exact decimals: TEXT in SQLite (written by ``fmt``), NUMERIC(38, 20) in
# PostgreSQL; each database adds its own append-only triggers.
SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq {seq},
    account TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('order', 'bonus', 'charge', 'payment', 'correction')),
    amount {amount} NOT NULL,
    balance_after {amount} NOT NULL,
    day TEXT NOT NULL,
    created_at {real} NOT NULL,
    thread_id TEXT,
    task_id TEXT,
    operator TEXT,
    megapixels {real},
    reference TEXT,
    traced_for TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_charge_once ON ledger(thread_id, task_id)
    WHERE kind = 'charge';
CREATE UNIQUE INDEX IF NOT EXISTS ledger_reference_once ON ledger(account, kind, reference)
    WHERE reference IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_account_day ON ledger(account, day);
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    balance {amount} NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    remaining {amount} NOT NULL,
    created_at {real} NOT NULL,
    kind TEXT NOT NULL DEFAULT 'thread'
);
CREATE TABLE IF NOT EXISTS payment_events (
    event_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount {amount} NOT NULL,
    received_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS prices (
    operator TEXT PRIMARY KEY,
    per_call {amount} NOT NULL,
    per_megapixel {amount} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    domain TEXT PRIMARY KEY,
    bonus_percent {amount} NOT NULL,
    commitment TEXT NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS daily (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    opening {amount} NOT NULL,
    transaction_total {amount} NOT NULL,
    traced_total {amount} NOT NULL,
    ordered_total {amount} NOT NULL,
    bonus_total {amount} NOT NULL,
    PRIMARY KEY (account, day)
);
"""

# Columns added after the ledger's first release (see tilemore.store.sql.ADDED_COLUMNS). Holds
# in a database from before were all made by the ingress or a batch; 'thread' is the kind the
# sweep handles with the shorter grace, so a batch in flight across the upgrade may lose its
# hold early (its charges are still checked against the balance).
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("holds", "kind", "TEXT NOT NULL DEFAULT 'thread'"),
)

SQLITE_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""


class Ledger(Holds):
    """The ledger's SQL over a database the subclass supplies (``_tx``, ``_read``,
    ``_query``), reservations included (:class:`~tilemore.billing.holds.Holds`). Amounts go
    in as ``fmt`` strings and come out as ``Decimal``."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _read: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]
    _clock: Callable[[], float]

    # -- writing ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], *, allow_negative: bool = False
               ) -> list[Appended]:
        """Append entries in one transaction (one fsync for the batch). An entry whose
        (thread, task) charge or (account, kind, reference) is already in the ledger is not
        appended again: its original is returned, marked ``duplicate``. A batch that would
        take a balance below zero, or an amount, balance or daily total to 10^18
        (:class:`AmountOutOfRange`), is refused whole."""
        with self._tx() as db:
            return [self._append_one(db, e, allow_negative) for e in entries]

    def write(self, items: Sequence[Entry | Settlement]) -> list[Appended | list[Appended]]:
        """Entries and settlements in one transaction (the writer's group commit): for each
        entry what :meth:`append` gives, for each settlement its charges'."""
        with self._tx() as db:
            return [self._settle_one(db, i) if isinstance(i, Settlement)
                    else self._append_one(db, i, False) for i in items]

    def append_event(self, event_id: str, entries: Sequence[Entry]) -> list[Appended] | None:
        """Append ``entries`` (an order and its bonus) for a payment provider's notification,
        and record ``event_id`` in the same transaction; None, with nothing appended, when
        the event was recorded before (a replay). The same id for another order or amount
        is a 409."""
        first = entries[0]
        with self._tx() as db:
            seen = db.execute("SELECT account, reference, amount FROM payment_events"
                              " WHERE event_id = ?", (event_id,)).fetchone()
            if seen is not None:
                if (seen["account"], seen["reference"], Decimal(seen["amount"])) != (
                        first.account, first.reference, first.amount):
                    raise DuplicateReference(
                        f"event '{event_id}' was already recorded for order "
                        f"'{seen['reference']}' of {seen['account']}", code="event_conflict")
                return None
            appended = [self._append_one(db, e, False) for e in entries]
            db.execute("INSERT INTO payment_events VALUES (?, ?, ?, ?, ?)",
                       (event_id, first.account, first.reference, fmt(first.amount),
                        self._clock()))
            return appended

    def transfer(self, source: str, target: str, reference: str, amount: Decimal) -> Appended:
        """Move ``amount`` from ``source`` (a domain) to ``target`` (its sub-account), as two
        'payment' entries in one transaction: ``-amount`` on the source, ``+amount`` on the
        target, both with ``reference``. Refused (402) when the source's balance less its
        holds cannot cover it. Idempotent by (target, reference): a payment recorded before
        is answered as it was (``duplicate``), even one from before transfers, which debited
        nobody. Returns the target's entry."""
        into = Entry(target, "payment", amount, reference=reference)
        with self._tx() as db:
            if self._existing(db, into) is not None:  # the pair went in whole, or is older
                return self._append_one(db, into, False)  # the duplicate, or a 409
            available = add(balance_in(db, source), CTX.minus(held_in(db, source)))
            if available < amount:
                raise InsufficientCredits(
                    f"account '{source}' has {fmt(available)} credits available; the payment "
                    f"moves {fmt(amount)} to '{target}'")
            self._append_one(db, Entry(source, "payment", CTX.minus(amount),
                                       reference=reference), False)
            return self._append_one(db, into, False)

    def _append_one(self, db: Any, e: Entry, allow_negative: bool) -> Appended:
        if e.kind == "charge" and e.thread_id is not None:
            fence(db, e.thread_id, e.epoch)  # a conductor that lost the thread charges nothing
        existing = self._existing(db, e)
        if existing is not None:
            if Decimal(existing["amount"]) != e.amount:
                raise DuplicateReference(
                    f"{e.kind} '{e.reference or e.task_id}' was already recorded with amount "
                    f"{fmt(Decimal(existing['amount']))}")
            return Appended(existing["seq"], e, Decimal(existing["balance_after"]), True)
        before = balance_in(db, e.account)
        after = add(before, e.amount)
        check_range(e.amount, f"the {e.kind} amount")
        check_range(after, f"the balance of '{e.account}'")
        if after < 0 and not allow_negative:
            raise InsufficientCredits(
                f"account '{e.account}' has {fmt(before)} credits; {fmt(-e.amount)} needed")
        now = self._clock()
        day = day_of(now)
        last = db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq = (last["seq"] + 1) if last else 1
        prev = last["hash"] if last else GENESIS
        digest = entry_hash(prev, seq, e, now, fmt(after))
        db.execute(
            "INSERT INTO ledger (seq, account, kind, amount, balance_after, day, created_at,"
            " thread_id, task_id, operator, megapixels, reference, traced_for, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, e.account, e.kind, fmt(e.amount), fmt(after), day, now, e.thread_id,
             e.task_id, e.operator, e.megapixels, e.reference, e.traced_for, prev, digest))
        db.execute("INSERT INTO balances VALUES (?, ?) ON CONFLICT (account) DO UPDATE"
                   " SET balance = excluded.balance", (e.account, fmt(after)))
        _add_daily(db, e.account, day, before, e)
        if e.hold is not None and e.amount < 0:
            row = db.execute("SELECT remaining FROM holds WHERE key = ?", (e.hold,)).fetchone()
            if row is not None:
                left = max(ZERO, add(Decimal(row["remaining"]), e.amount))
                db.execute("UPDATE holds SET remaining = ? WHERE key = ?", (fmt(left), e.hold))
        if e.traced_for and e.kind == "charge":
            _add_daily(db, e.traced_for, day, balance_in(db, e.traced_for), e, traced=True)
        return Appended(seq, e, after)

    def _settle_one(self, db: Any, s: Settlement) -> list[Appended]:
        if s.thread_id is not None:
            fence(db, s.thread_id, s.epoch)  # before anything: a lost lease settles nothing
        done = []
        for e in s.charges:
            existing = self._existing(db, e)
            if existing is None:
                done.append(self._append_one(db, e, False))
            else:  # settled before: the original stands, whatever it cost
                done.append(Appended(existing["seq"], e, Decimal(existing["balance_after"]),
                                     True))
        if s.hold is not None:
            db.execute("DELETE FROM holds WHERE key = ?", (s.hold,))
        return done

    @staticmethod
    def _existing(db: Any, e: Entry) -> Row | None:
        if e.kind == "charge" and e.thread_id and e.task_id:
            return db.execute("SELECT seq, amount, balance_after FROM ledger WHERE kind ="
                              " 'charge' AND thread_id = ? AND task_id = ?",
                              (e.thread_id, e.task_id)).fetchone()
        if e.reference is not None:
            return db.execute("SELECT seq, amount, balance_after FROM ledger WHERE account = ?"
                              " AND kind = ? AND reference = ?",
                              (e.account, e.kind, e.reference)).fetchone()
        return None

    # -- prices and plans (data an admin sets) ---------------------------------------------

    def set_price(self, operator: str, per_call: Decimal, per_megapixel: Decimal) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO prices VALUES (?, ?, ?, ?) ON CONFLICT (operator) DO UPDATE"
                       " SET per_call = excluded.per_call, per_megapixel ="
                       " excluded.per_megapixel, updated_at = excluded.updated_at",
                       (operator, fmt(per_call), fmt(per_megapixel), self._clock()))

    def prices(self) -> dict[str, tuple[Decimal, Decimal]]:
        return {r["operator"]: (Decimal(r["per_call"]), Decimal(r["per_megapixel"]))
                for r in self._query("SELECT * FROM prices")}

    def set_plan(self, domain: str, bonus_percent: Decimal, commitment: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO plans VALUES (?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE"
                       " SET bonus_percent = excluded.bonus_percent, commitment ="
                       " excluded.commitment, updated_at = excluded.updated_at",
                       (domain, fmt(bonus_percent), commitment, self._clock()))

    def plan(self, domain: str) -> tuple[Decimal, str]:
        rows = self._query("SELECT * FROM plans WHERE domain = ?", (domain,))
        return (Decimal(rows[0]["bonus_percent"]), rows[0]["commitment"]) if rows else (
            ZERO, "none")

    # -- reading ---------------------------------------------------------------------------

    def balance(self, account: str) -> Decimal:
        rows = self._query("SELECT balance FROM balances WHERE account = ?", (account,))
        return Decimal(rows[0]["balance"]) if rows else ZERO

    def entries(self, account: str | None = None, day: str | None = None) -> list[Row]:
        sql, args = "SELECT * FROM ledger WHERE 1 = 1", []
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        if day is not None:
            sql += " AND day = ?"
            args.append(day)
        return self._query(sql + " ORDER BY seq", args)

    def daily(self, account: str, first: str, last: str) -> list[Row]:
        """The account's per-day totals from ``first`` to ``last`` (ISO dates), oldest first."""
        return self._query("SELECT * FROM daily WHERE account = ? AND day >= ? AND day <= ?"
                           " ORDER BY day", (account, first, last))

    def daily_before(self, account: str, day: str) -> Row | None:
        """The account's latest per-day totals before ``day``: where its balance stood."""
        rows = self._query("SELECT * FROM daily WHERE account = ? AND day < ?"
                           " ORDER BY day DESC LIMIT 1", (account, day))
        return rows[0] if rows else None

    def thread_cost(self, thread_id: str) -> Decimal:
        rows = self._query("SELECT amount FROM ledger WHERE kind = 'charge' AND thread_id = ?",
                           (thread_id,))
        return CTX.minus(add(*(Decimal(r["amount"]) for r in rows)))

    def verify(self) -> Verification:
        """Recompute the hash chain, every balance and every day's totals from the entries."""
        with self._read() as db:  # one snapshot: entries and what is derived from them
            rows = db.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
            balances = {r["account"]: Decimal(r["balance"])
                        for r in db.execute("SELECT * FROM balances").fetchall()}
            daily = {(r["account"], r["day"]): {k: Decimal(r[k]) for k in DAILY_TOTALS}
                     for r in db.execute("SELECT * FROM daily").fetchall()}
        return verify_rows(rows, balances, daily)


def _add_daily(db: Any, account: str, day: str, opening: Decimal, e: Entry,
               traced: bool = False) -> None:
    row = db.execute("SELECT * FROM daily WHERE account = ? AND day = ?", (account, day)
                     ).fetchone()
    totals = {k: Decimal(row[k]) if row else ZERO for k in DAILY_TOTALS}
    total = daily_total(e.kind, traced, e.amount)
    if total is not None:
        totals[total] = add(totals[total], daily_delta(total, e.amount))
        check_range(totals[total], f"the {total} of '{account}' on {day}")
    db.execute(
        "INSERT INTO daily VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, day) DO"
        " UPDATE SET transaction_total = excluded.transaction_total, traced_total ="
        " excluded.traced_total, ordered_total = excluded.ordered_total, bonus_total ="
        " excluded.bonus_total",
        (account, day, fmt(Decimal(row["opening"]) if row else opening),
         *(fmt(totals[k]) for k in DAILY_TOTALS)))


class SQLiteLedger(Ledger, SQLiteDatabase):
    """The ledger in the embedded SQLite file (shared with the store)."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time,
                 busy_seconds: float = 5.0) -> None:
        SQLiteDatabase.__init__(self, path, SCHEMA + SQLITE_TRIGGERS, ADDED_COLUMNS,
                                busy_seconds)
        self._clock = clock


def open_ledger(db: DatabaseSettings, clock: Callable[[], float] = time.time) -> Ledger:
    """The configured ledger (``settings.db``): PostgreSQL when ``database_url`` is set, else
    the SQLite file beside the store's records."""
    if db.database_url:
        from tilemore.billing.postgres import PostgresLedger

        return PostgresLedger(db.database_url, clock)
    return SQLiteLedger(db.database_path, clock, db.sqlite_busy_seconds)
