"""Leases on threads: any number of conductors share the unfinished threads, each running a
thread only while it holds the thread's lease.

A lease is (owner, epoch, until). Claiming a thread whose lease is free or expired takes it
and raises its epoch; every write a conductor makes for the thread names the epoch it holds
(:func:`fence`), so a conductor that was paused past its lease — and whose thread another
conductor has claimed since — has its late writes refused (:class:`LeaseLost`) instead of
mixed into the new run. Claims are fair between domains: each round takes the oldest thread
of every domain before the second-oldest of any.

SQLite serialises claims with its write lock; PostgreSQL's claim takes rows ``FOR UPDATE SKIP
LOCKED``, so conductors claiming at once take different threads without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tilemore.errors import TilemoreError

LEASE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("threads", "lease_owner", "TEXT"),
    ("threads", "lease_epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("threads", "lease_until", "{real}"),
)

# The unfinished threads free to claim (unleased, run out, or — after a restart — held under
# the claimer's own name), ranked so that every domain's oldest comes first.
_FREE = "(lease_until IS NULL OR lease_until < ? OR lease_owner = ?)"
_CLAIMABLE = f"""
SELECT id, ROW_NUMBER() OVER (PARTITION BY domain ORDER BY created_at) AS turn, created_at
FROM threads WHERE status = 'processing' AND {_FREE}
"""


class LeaseLost(TilemoreError):
    """Another conductor holds the thread now: this one must stop working on it."""

    code = "lease_lost"
    status = 409


@dataclass(frozen=True)
class Lease:
    thread_id: str
    epoch: int


def fence(db: Any, thread_id: str, epoch: int | None) -> None:
    """Refuse a write for ``thread_id`` unless its lease is still at ``epoch`` (None: a write
    that needs no lease, such as the ingress's)."""
    if epoch is None:
        return
    row = db.execute("SELECT lease_epoch FROM threads WHERE id = ?", (thread_id,)).fetchone()
    if row is None or row["lease_epoch"] != epoch:
        raise LeaseLost(f"thread {thread_id} is leased to another conductor now")


class Leases:
    """The lease half of :class:`~tilemore.store.sql.SQLStore` (same tables)."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]
    skip_locked: str = ""  # PostgreSQL: " FOR UPDATE OF threads SKIP LOCKED"

    def claim_threads(self, owner: str, limit: int, seconds: float, *,
                      owner_may_reclaim: bool = False, exclude: Collection[str] = (),
                      now: float | None = None) -> list[Lease]:
        """Take up to ``limit`` unfinished threads whose lease is free or run out, fairly
        between domains, for ``seconds``; with ``owner_may_reclaim``, also those leased to
        ``owner`` (its previous life), but never those in ``exclude`` (running here)."""
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        mine = owner if owner_may_reclaim else None
        with self._tx() as db:
            # The outer row is checked again: PostgreSQL re-reads a row it locks after a
            # concurrent claim committed, and must then see it taken (the subquery's snapshot
            # would not).
            rows = db.execute(
                f"SELECT threads.id FROM threads JOIN ({_CLAIMABLE}) AS free"
                " ON free.id = threads.id WHERE threads.status = 'processing' AND"
                f" {_FREE.replace('lease_', 'threads.lease_')}"
                " ORDER BY free.turn, free.created_at LIMIT ?"
                f"{self.skip_locked}", (now, mine, now, mine, limit + len(exclude))).fetchall()
            ids = [r["id"] for r in rows if r["id"] not in exclude][:limit]
            return [self._take(db, i, owner, now + seconds) for i in ids]

    def claim_thread(self, owner: str, thread_id: str, seconds: float, *,
                     owner_may_reclaim: bool = False,
                     now: float | None = None) -> Lease | None:
        """Take one named thread, if it is unfinished and its lease is free or run out (or,
        with ``owner_may_reclaim``, held under ``owner``)."""
        now = time.time() if now is None else now
        mine = owner if owner_may_reclaim else None
        with self._tx() as db:
            row = db.execute(
                f"SELECT id FROM threads WHERE id = ? AND status = 'processing' AND {_FREE}"
                f"{self.skip_locked}", (thread_id, now, mine)).fetchone()
            return None if row is None else self._take(db, thread_id, owner, now + seconds)

    @staticmethod
    def _take(db: Any, thread_id: str, owner: str, until: float) -> Lease:
        db.execute("UPDATE threads SET lease_owner = ?, lease_epoch = lease_epoch + 1,"
                   " lease_until = ? WHERE id = ?", (owner, until, thread_id))
        row = db.execute("SELECT lease_epoch FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return Lease(thread_id, int(row["lease_epoch"]))

    def renew_leases(self, leases: Iterable[Lease], seconds: float,
                     now: float | None = None) -> list[Lease]:
        """Extend these leases; return those lost (taken by another conductor, or the thread
        ended): their runs must stop."""
        until = (time.time() if now is None else now) + seconds
        lost = []
        with self._tx() as db:
            for lease in leases:
                cur = db.execute("UPDATE threads SET lease_until = ? WHERE id = ? AND"
                                 " lease_epoch = ? AND status = 'processing'",
                                 (until, lease.thread_id, lease.epoch))
                if cur.rowcount != 1:
                    lost.append(lease)
        return lost

    def release_lease(self, lease: Lease) -> None:
        """Give a thread back before its lease runs out (a conductor stopping): another
        conductor may claim it at once."""
        with self._tx() as db:
            db.execute("UPDATE threads SET lease_until = NULL, lease_owner = NULL WHERE id = ?"
                       " AND lease_epoch = ?", (lease.thread_id, lease.epoch))

    def backlog(self) -> dict[str, int]:
        """Unfinished threads by domain (admission control, fairness, conductor scaling)."""
        rows = self._query("SELECT domain, COUNT(*) AS n FROM threads WHERE status ="
                           " 'processing' GROUP BY domain")
        return {r["domain"]: int(r["n"]) for r in rows}
