"""The append-only ledger: every credit movement is an entry, chained to the one before by a
hash, so a changed or missing entry is detectable (:meth:`SQLiteLedger.verify`).

The database itself refuses UPDATE and DELETE on entries (triggers); corrections are new
entries. Balances and per-day totals are kept beside the ledger in the same transaction as
each append — derived data, which ``verify`` recomputes from the entries and compares.
A charge is keyed by (thread, task): a retried or replayed task cannot be charged twice.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from tilemore.billing.money import CTX, ZERO, add, fmt
from tilemore.errors import TilemoreError
from tilemore.store.sqlite_db import SQLiteDatabase

Kind = Literal["order", "bonus", "charge", "payment", "correction"]
GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('order', 'bonus', 'charge', 'payment', 'correction')),
    amount TEXT NOT NULL,
    balance_after TEXT NOT NULL,
    day TEXT NOT NULL,
    created_at REAL NOT NULL,
    thread_id TEXT,
    task_id TEXT,
    operator TEXT,
    megapixels REAL,
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
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    balance TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    remaining TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS prices (
    operator TEXT PRIMARY KEY,
    per_call TEXT NOT NULL,
    per_megapixel TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    domain TEXT PRIMARY KEY,
    bonus_percent TEXT NOT NULL,
    commitment TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS daily (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    opening TEXT NOT NULL,
    transaction_total TEXT NOT NULL,
    traced_total TEXT NOT NULL,
    ordered_total TEXT NOT NULL,
    bonus_total TEXT NOT NULL,
    PRIMARY KEY (account, day)
);
"""


class InsufficientCredits(TilemoreError):
    code = "insufficient_credits"
    status = 402


class DuplicateReference(TilemoreError):
    code = "duplicate_reference"
    status = 409


@dataclass(frozen=True)
class Entry:
    """What to append. ``amount`` is signed: charges are negative."""

    account: str
    kind: Kind
    amount: Decimal
    thread_id: str | None = None
    task_id: str | None = None
    operator: str | None = None
    megapixels: float | None = None
    reference: str | None = None
    traced_for: str | None = None  # a sub-account's charge shows in this parent's traced total
    hold: str | None = None  # a charge draws down this reservation (not part of the entry)


@dataclass(frozen=True)
class Appended:
    seq: int
    entry: Entry
    balance_after: Decimal
    duplicate: bool = False  # the same charge or reference was already in the ledger


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    problems: list[str]


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def entry_hash(prev: str, seq: int, e: Entry, created_at: float, balance_after: str) -> str:
    fields = [prev, str(seq), e.account, e.kind, fmt(e.amount), balance_after,
              repr(created_at), e.thread_id or "", e.task_id or "", e.operator or "",
              "" if e.megapixels is None else repr(e.megapixels), e.reference or "",
              e.traced_for or ""]
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


class SQLiteLedger(SQLiteDatabase):
    def __init__(self, path: Path | str, clock=time.time) -> None:
        super().__init__(path, SCHEMA)
        self._clock = clock

    # -- writing ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], *, allow_negative: bool = False
               ) -> list[Appended]:
        """Append entries in one transaction (one fsync for the batch). An entry whose
        (thread, task) charge or (account, kind, reference) is already in the ledger is not
        appended again: its original is returned, marked ``duplicate``. A batch that would
        take a balance below zero is refused whole."""
        with self._tx() as db:
            return [self._append_one(db, e, allow_negative) for e in entries]

    def _append_one(self, db: sqlite3.Connection, e: Entry, allow_negative: bool) -> Appended:
        existing = self._existing(db, e)
        if existing is not None:
            if Decimal(existing["amount"]) != e.amount:
                raise DuplicateReference(
                    f"{e.kind} '{e.reference or e.task_id}' was already recorded with amount "
                    f"{existing['amount']}")
            return Appended(existing["seq"], e, Decimal(existing["balance_after"]), True)
        row = db.execute("SELECT balance FROM balances WHERE account = ?", (e.account,)
                         ).fetchone()
        before = Decimal(row["balance"]) if row else ZERO
        after = add(before, e.amount)
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
        self._add_daily(db, e.account, day, before, e)
        if e.hold is not None and e.amount < 0:
            row = db.execute("SELECT remaining FROM holds WHERE key = ?", (e.hold,)).fetchone()
            if row is not None:
                left = max(ZERO, add(Decimal(row["remaining"]), e.amount))
                db.execute("UPDATE holds SET remaining = ? WHERE key = ?", (fmt(left), e.hold))
        if e.traced_for and e.kind == "charge":
            parent = db.execute("SELECT balance FROM balances WHERE account = ?",
                                (e.traced_for,)).fetchone()
            self._add_daily(db, e.traced_for, day,
                            Decimal(parent["balance"]) if parent else ZERO, e, traced=True)
        return Appended(seq, e, after)

    def _existing(self, db: sqlite3.Connection, e: Entry) -> sqlite3.Row | None:
        if e.kind == "charge" and e.thread_id and e.task_id:
            return db.execute("SELECT seq, amount, balance_after FROM ledger WHERE kind ="
                              " 'charge' AND thread_id = ? AND task_id = ?",
                              (e.thread_id, e.task_id)).fetchone()
        if e.reference is not None:
            return db.execute("SELECT seq, amount, balance_after FROM ledger WHERE account = ?"
                              " AND kind = ? AND reference = ?",
                              (e.account, e.kind, e.reference)).fetchone()
        return None

    @staticmethod
    def _add_daily(db: sqlite3.Connection, account: str, day: str, opening: Decimal, e: Entry,
                   traced: bool = False) -> None:
        row = db.execute("SELECT * FROM daily WHERE account = ? AND day = ?", (account, day)
                         ).fetchone()
        totals = {k: Decimal(row[k]) if row else ZERO for k in (
            "transaction_total", "traced_total", "ordered_total", "bonus_total")}
        key = ("traced_total" if traced else {
            "charge": "transaction_total", "order": "ordered_total", "payment": "ordered_total",
            "bonus": "bonus_total"}.get(e.kind))  # corrections move the balance only
        if key is not None:
            delta = CTX.minus(e.amount) if key in ("traced_total", "transaction_total") \
                else e.amount
            totals[key] = add(totals[key], delta)
        db.execute(
            "INSERT INTO daily VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, day) DO"
            " UPDATE SET transaction_total = excluded.transaction_total, traced_total ="
            " excluded.traced_total, ordered_total = excluded.ordered_total, bonus_total ="
            " excluded.bonus_total",
            (account, day, row["opening"] if row else fmt(opening),
             *(fmt(totals[k]) for k in ("transaction_total", "traced_total", "ordered_total",
                                         "bonus_total"))))

    # -- reservations ----------------------------------------------------------------------

    def reserve(self, account: str, key: str, amount: Decimal) -> None:
        """Set ``amount`` aside for work about to run, or refuse (402) when the balance less
        what is already set aside cannot cover it. One transaction: concurrent reservations
        are serialised by the database, so N submissions against a balance that covers K of
        them reserve exactly K."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM holds WHERE key = ?", (key,)).fetchone():
                return
            row = db.execute("SELECT balance FROM balances WHERE account = ?", (account,)
                             ).fetchone()
            balance = Decimal(row["balance"]) if row else ZERO
            held = add(*(Decimal(r["remaining"]) for r in db.execute(
                "SELECT remaining FROM holds WHERE account = ?", (account,))))
            available = add(balance, CTX.minus(held))
            if available < amount:
                raise InsufficientCredits(
                    f"account '{account}' has {fmt(available)} credits available; this work "
                    f"is estimated at {fmt(amount)}")
            db.execute("INSERT INTO holds VALUES (?, ?, ?, ?)",
                       (key, account, fmt(amount), self._clock()))

    def release(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM holds WHERE key = ?", (key,))

    def held(self, account: str) -> Decimal:
        with self._lock:
            rows = self._db.execute("SELECT remaining FROM holds WHERE account = ?",
                                    (account,)).fetchall()
        return add(*(Decimal(r["remaining"]) for r in rows))

    # -- prices and plans (data an admin sets) ---------------------------------------------

    def set_price(self, operator: str, per_call: Decimal, per_megapixel: Decimal) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO prices VALUES (?, ?, ?, ?) ON CONFLICT (operator) DO UPDATE"
                       " SET per_call = excluded.per_call, per_megapixel ="
                       " excluded.per_megapixel, updated_at = excluded.updated_at",
                       (operator, fmt(per_call), fmt(per_megapixel), self._clock()))

    def prices(self) -> dict[str, tuple[Decimal, Decimal]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM prices").fetchall()
        return {r["operator"]: (Decimal(r["per_call"]), Decimal(r["per_megapixel"]))
                for r in rows}

    def set_plan(self, domain: str, bonus_percent: Decimal, commitment: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO plans VALUES (?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE"
                       " SET bonus_percent = excluded.bonus_percent, commitment ="
                       " excluded.commitment, updated_at = excluded.updated_at",
                       (domain, fmt(bonus_percent), commitment, self._clock()))

    def plan(self, domain: str) -> tuple[Decimal, str]:
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE domain = ?", (domain,)).fetchone()
        return (Decimal(row["bonus_percent"]), row["commitment"]) if row else (ZERO, "none")

    # -- reading ---------------------------------------------------------------------------

    def balance(self, account: str) -> Decimal:
        with self._lock:
            row = self._db.execute("SELECT balance FROM balances WHERE account = ?",
                                   (account,)).fetchone()
        return Decimal(row["balance"]) if row else ZERO

    def entries(self, account: str | None = None, day: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM ledger WHERE 1 = 1", []
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        if day is not None:
            sql += " AND day = ?"
            args.append(day)
        with self._lock:
            return self._db.execute(sql + " ORDER BY seq", args).fetchall()

    def thread_cost(self, thread_id: str) -> Decimal:
        with self._lock:
            rows = self._db.execute("SELECT amount FROM ledger WHERE kind = 'charge' AND"
                                    " thread_id = ?", (thread_id,)).fetchall()
        return CTX.minus(add(*(Decimal(r["amount"]) for r in rows)))

    def verify(self) -> Verification:
        """Recompute the hash chain, every balance and every day's totals from the entries."""
        problems: list[str] = []
        balances: dict[str, Decimal] = {}
        prev, count = GENESIS, 0
        with self._lock:
            rows = self._db.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
            stored = {r["account"]: Decimal(r["balance"]) for r in
                      self._db.execute("SELECT * FROM balances").fetchall()}
        for r in rows:
            count += 1
            e = Entry(r["account"], r["kind"], Decimal(r["amount"]), r["thread_id"],
                      r["task_id"], r["operator"], r["megapixels"], r["reference"],
                      r["traced_for"])
            balances[e.account] = add(balances.get(e.account, ZERO), e.amount)
            if r["prev_hash"] != prev:
                problems.append(f"entry {r['seq']}: does not follow entry before it")
            if entry_hash(r["prev_hash"], r["seq"], e, r["created_at"],
                          r["balance_after"]) != r["hash"]:
                problems.append(f"entry {r['seq']}: its content does not match its hash")
            if Decimal(r["balance_after"]) != balances[e.account]:
                problems.append(f"entry {r['seq']}: balance_after disagrees with the sum")
            prev = r["hash"]
        for account in set(balances) | set(stored):
            if balances.get(account, ZERO) != stored.get(account, ZERO):
                problems.append(f"account {account}: stored balance {stored.get(account)} "
                                f"but entries sum to {balances.get(account, ZERO)}")
        problems += self._verify_daily(rows)
        return Verification(not problems, count, problems)

    def _verify_daily(self, rows: list[sqlite3.Row]) -> list[str]:
        keys = ("transaction_total", "traced_total", "ordered_total", "bonus_total")
        want: dict[tuple[str, str], dict[str, Decimal]] = {}

        def note(account: str, day: str, key: str, amount: Decimal) -> None:
            totals = want.setdefault((account, day), dict.fromkeys(keys, ZERO))
            totals[key] = add(totals[key], amount)

        for r in rows:
            amount = Decimal(r["amount"])
            key = {"charge": "transaction_total", "order": "ordered_total",
                   "payment": "ordered_total", "bonus": "bonus_total"}.get(r["kind"])
            note(r["account"], r["day"], key or "transaction_total", -amount if key ==
                "transaction_total" else (amount if key else ZERO))
            if r["kind"] == "charge" and r["traced_for"]:
                note(r["traced_for"], r["day"], "traced_total", -amount)
        with self._lock:
            have = {(r["account"], r["day"]): {k: Decimal(r[k]) for k in keys}
                    for r in self._db.execute("SELECT * FROM daily").fetchall()}
        return [f"daily totals of {a} on {d} disagree with the ledger"
                for (a, d) in set(want) | set(have)
                if want.get((a, d)) != have.get((a, d))]

