"""Reservations: credits set aside for work about to run, so that concurrent submissions
cannot spend one balance twice, and given back when the work ends.

A hold is keyed by its work: a task thread's idempotency key (``kind`` 'thread'), or a batch
image's key ('batch'). Its owner releases it when the work ends; :meth:`Holds.sweep_holds`
gives back what an owner could not (a crash between reserve and record, a release that met
a database outage): thread holds whose thread has ended, or that no thread was ever recorded
for after a grace period; batch holds after a much longer one. Holds and threads live in the
same database (file or schema), so the sweep is one statement that sees both.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any, Literal

from tilemore.billing.entries import InsufficientCredits
from tilemore.billing.money import CTX, ZERO, add, fmt

HoldKind = Literal["thread", "batch"]

# The holds a sweep may give back, oldest first; parameters: the thread grace's cutoff, the
# batch grace's cutoff, the batch size. A hold whose thread is still processing is never one.
SWEEPABLE = """
SELECT h.key FROM holds h LEFT JOIN threads t ON t.idem_key = h.key
WHERE (h.kind = 'thread' AND (t.status IN ('done', 'failed', 'canceled')
                              OR (t.id IS NULL AND h.created_at < ?)))
   OR (h.kind = 'batch' AND h.created_at < ?)
ORDER BY h.created_at LIMIT ?
"""


def balance_in(db: Any, account: str) -> Decimal:
    row = db.execute("SELECT balance FROM balances WHERE account = ?", (account,)).fetchone()
    return Decimal(row["balance"]) if row else ZERO


def held_in(db: Any, account: str) -> Decimal:
    return add(*(Decimal(r["remaining"]) for r in db.execute(
        "SELECT remaining FROM holds WHERE account = ?", (account,)).fetchall()))


class Holds:
    """The reservation half of :class:`~tilemore.billing.ledger.Ledger` (same database)."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]
    _clock: Callable[[], float]

    def reserve(self, account: str, key: str, amount: Decimal, *,
                kind: HoldKind = "thread") -> None:
        """Set ``amount`` aside for work about to run, or refuse (402) when the balance less
        what is already set aside cannot cover it. One transaction: concurrent reservations
        are serialised by the database, so N submissions against a balance that covers K of
        them reserve exactly K."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM holds WHERE key = ?", (key,)).fetchone():
                return
            available = add(balance_in(db, account), CTX.minus(held_in(db, account)))
            if available < amount:
                raise InsufficientCredits(
                    f"account '{account}' has {fmt(available)} credits available; this work "
                    f"is estimated at {fmt(amount)}")
            db.execute("INSERT INTO holds (key, account, remaining, created_at, kind)"
                       " VALUES (?, ?, ?, ?, ?)",
                       (key, account, fmt(amount), self._clock(), kind))

    def release(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM holds WHERE key = ?", (key,))

    def release_part(self, key: str, amount: Decimal) -> None:
        """Give back ``amount`` of a hold (work it was set aside for will not run), never
        below zero."""
        with self._tx() as db:
            row = db.execute("SELECT remaining FROM holds WHERE key = ?", (key,)).fetchone()
            if row is not None:
                left = max(ZERO, add(Decimal(row["remaining"]), CTX.minus(amount)))
                db.execute("UPDATE holds SET remaining = ? WHERE key = ?", (fmt(left), key))

    def held(self, account: str) -> Decimal:
        rows = self._query("SELECT remaining FROM holds WHERE account = ?", (account,))
        return add(*(Decimal(r["remaining"]) for r in rows))

    def hold_keys(self) -> list[str]:
        """Every hold's key, oldest first (what an operator looking at leaks would ask)."""
        return [r["key"] for r in self._query("SELECT key FROM holds ORDER BY created_at, key")]

    def sweep_holds(self, grace_seconds: float, batch_grace_seconds: float,
                    limit: int = 500) -> int:
        """Give back at most ``limit`` holds no work owns any more (see the module's words);
        return how many. A cheap read first: the write lock is taken only when there is
        something to give back, and the condition is checked again under it."""
        now = self._clock()
        args = (now - grace_seconds, now - batch_grace_seconds, limit)
        if not self._query(SWEEPABLE, args):
            return 0
        with self._tx() as db:
            cur = db.execute(f"DELETE FROM holds WHERE key IN ({SWEEPABLE})", args)
            return max(cur.rowcount, 0)
