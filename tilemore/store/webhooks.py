"""Webhooks in the registry: each domain's endpoints, and the outbox of deliveries with
their attempts.

The outbox is written by the conductor's listener (one row per event and endpoint, keyed by
both, so an event written twice is one delivery) and read by deliverers. A deliverer claims
due rows in one transaction, raising the row's attempt number and pushing its ``next_at``
past a lease: another deliverer skips it (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite:
the write lock) until the lease runs out, which only happens if the claimer died. The
attempt's outcome is written only while the row is still at that attempt number, so a
deliverer that was paused past its lease cannot overwrite a newer attempt.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tilemore.errors import TilemoreError

WEBHOOKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until {real},
    low_balance TEXT,
    created_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_domain ON webhook_endpoints(domain);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    subject TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'given_up')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at {real} NOT NULL,
    window_start {real} NOT NULL,
    claimed_by TEXT,
    created_at {real} NOT NULL,
    finished_at {real},
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(next_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint
    ON webhook_deliveries(endpoint_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_created ON webhook_deliveries(created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_subject ON webhook_deliveries(subject)
    WHERE subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS threads_finished ON threads(domain, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    at {real} NOT NULL,
    status_code INTEGER,
    error TEXT,
    seconds {real},
    PRIMARY KEY (delivery_id, n)
);
CREATE TABLE IF NOT EXISTS webhook_low_balance (
    endpoint_id TEXT NOT NULL,
    account TEXT NOT NULL,
    below INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, account)
);
"""
ATTEMPTS_LISTED = 50  # a delivery's latest attempts in its listing


class TooManyEndpoints(TilemoreError):
    code = "too_many_endpoints"
    status = 422


@dataclass(frozen=True)
class Endpoint:
    id: str
    domain: str
    url: str
    events: tuple[str, ...]
    secret: str
    previous_secret: str | None
    previous_until: float | None
    low_balance: str | None  # a decimal threshold, as text
    created_at: float

    def secrets(self, now: float) -> list[str]:
        """Those that sign a delivery now: the current one, and the previous one during
        its overlap."""
        if self.previous_secret and self.previous_until and now < self.previous_until:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True)
class Outgoing:
    """One delivery's event, for one endpoint."""

    endpoint_id: str
    domain: str
    event_id: str
    event: str
    payload: bytes
    subject: str | None = None  # the thread, for a thread event


@dataclass(frozen=True)
class Claimed:
    id: str
    attempt: int  # this attempt's number: its outcome is written only while still at it
    endpoint: Endpoint
    event: str
    event_id: str
    payload: bytes
    window_start: float


class WebhookStore:
    """Mixed into :class:`~tilemore.store.sql.SQLStore`."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]
    domain_lock: str = ""  # PostgreSQL serialises one domain's endpoint count with it
    outbox_lock: str = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED"

    # -- endpoints -------------------------------------------------------------------------

    def create_endpoint(self, domain: str, url: str, events: Sequence[str],
                        low_balance: str | None, secret: str, most: int) -> Endpoint:
        """Register an endpoint, refusing the domain's ``most + 1``-th."""
        now = time.time()
        ep = Endpoint(f"we_{uuid.uuid4().hex}", domain, url, tuple(events), secret, None,
                      None, low_balance, now)
        with self._tx() as db:
            if self.domain_lock:
                db.execute(self.domain_lock, (domain,))
            n = db.execute("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE domain = ?",
                           (domain,)).fetchone()["n"]
            if int(n) >= most:
                raise TooManyEndpoints(f"a domain may register {most} webhook endpoints; "
                                       "delete one first")
            db.execute("INSERT INTO webhook_endpoints (id, domain, url, events, secret,"
                       " low_balance, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (ep.id, domain, url, " ".join(events), secret, low_balance, now))
        return ep

    def endpoints(self, domain: str) -> list[Endpoint]:
        rows = self._query("SELECT * FROM webhook_endpoints WHERE domain = ?"
                           " ORDER BY created_at, id", (domain,))
        return [_endpoint(r) for r in rows]

    def endpoint(self, domain: str, endpoint_id: str) -> Endpoint | None:
        rows = self._query("SELECT * FROM webhook_endpoints WHERE domain = ? AND id = ?",
                           (domain, endpoint_id))
        return _endpoint(rows[0]) if rows else None

    def delete_endpoint(self, domain: str, endpoint_id: str) -> bool:
        """The endpoint goes, with its deliveries and their attempts."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM webhook_endpoints WHERE domain = ? AND id = ?",
                             (domain, endpoint_id))
            if cur.rowcount != 1:
                return False
            db.execute("DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM"
                       " webhook_deliveries WHERE endpoint_id = ?)", (endpoint_id,))
            db.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
            db.execute("DELETE FROM webhook_low_balance WHERE endpoint_id = ?", (endpoint_id,))
        return True

    def rotate_secret(self, domain: str, endpoint_id: str, secret: str,
                      previous_until: float) -> Endpoint | None:
        """A new signing secret; the current one signs too until ``previous_until``."""
        with self._tx() as db:
            cur = db.execute("UPDATE webhook_endpoints SET previous_secret = secret,"
                             " previous_until = ?, secret = ? WHERE domain = ? AND id = ?",
                             (previous_until, secret, domain, endpoint_id))
            if cur.rowcount != 1:
                return None
        return self.endpoint(domain, endpoint_id)

    # -- the outbox ------------------------------------------------------------------------

    def enqueue(self, outgoing: Iterable[Outgoing], now: float | None = None) -> int:
        """Write deliveries, durably; one already written (same endpoint and event) is left
        as it is. Returns how many are new."""
        now = time.time() if now is None else now
        rows = [(f"wd_{uuid.uuid4().hex}", o.endpoint_id, o.domain, o.event_id, o.event,
                 o.subject, o.payload.decode(), now, now, now) for o in outgoing]
        if not rows:
            return 0
        new = 0
        with self._tx() as db:
            for row in rows:
                cur = db.execute(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, domain, event_id, event,"
                    " subject, payload, status, next_at, window_start, created_at) VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)"
                    " ON CONFLICT (endpoint_id, event_id) DO NOTHING", row)
                new += max(cur.rowcount, 0)
        return new

    def unsent_thread_ends(self, since: float, until: float, limit: int = 500
                           ) -> list[tuple[str, str]]:
        """(thread id, endpoint id) of threads that ended between ``since`` and ``until``
        and whose end an endpoint of their domain asked for, with no delivery written: the
        events a conductor that died between recording a thread's end and writing its
        outbox row did not write (the deliverer's sweep writes them)."""
        rows = self._query(
            "SELECT t.id AS thread_id, t.status, e.id AS endpoint_id, e.events"
            " FROM webhook_endpoints e JOIN threads t ON t.domain = e.domain"
            " WHERE t.finished_at >= ? AND t.finished_at <= ?"
            " AND t.status IN ('done', 'failed', 'canceled')"
            " AND e.created_at <= t.finished_at AND NOT EXISTS (SELECT 1 FROM"
            " webhook_deliveries d WHERE d.subject = t.id AND d.endpoint_id = e.id"
            " AND d.event = 'thread.' || t.status) LIMIT ?",
            (since, until, limit))
        return [(r["thread_id"], r["endpoint_id"]) for r in rows
                if f"thread.{r['status']}" in r["events"].split()]

    def balance_crossed(self, endpoint_id: str, account: str, below: bool,
                        outgoing: Outgoing | None) -> bool:
        """Record whether ``account`` is below the endpoint's threshold now; when it just
        went below (it was not, or was never seen), write ``outgoing`` in the same
        transaction and return True: once per crossing."""
        with self._tx() as db:
            row = db.execute("SELECT below FROM webhook_low_balance WHERE endpoint_id = ? AND"
                             f" account = ?{self.outbox_lock.replace(' SKIP LOCKED', '')}",
                             (endpoint_id, account)).fetchone()
            was = bool(row["below"]) if row is not None else False
            if row is not None and was == below:
                return False
            db.execute("INSERT INTO webhook_low_balance VALUES (?, ?, ?) ON CONFLICT"
                       " (endpoint_id, account) DO UPDATE SET below = excluded.below",
                       (endpoint_id, account, int(below)))
            if not below or was or outgoing is None:
                return False
            now = time.time()
            cur = db.execute(
                "INSERT INTO webhook_deliveries (id, endpoint_id, domain, event_id, event,"
                " payload, status, next_at, window_start, created_at) VALUES"
                " (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)"
                " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                (f"wd_{uuid.uuid4().hex}", outgoing.endpoint_id, outgoing.domain,
                 outgoing.event_id, outgoing.event, outgoing.payload.decode(), now, now, now))
            return cur.rowcount == 1

    def claim_deliveries(self, owner: str, limit: int, lease_seconds: float,
                         now: float | None = None) -> list[Claimed]:
        """Take up to ``limit`` due deliveries for one attempt each, for ``lease_seconds``."""
        now = time.time() if now is None else now
        with self._tx() as db:
            ids = [r["id"] for r in db.execute(
                "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ?"
                f" ORDER BY next_at LIMIT ?{self.outbox_lock}", (now, limit)).fetchall()]
            out = []
            for delivery_id in ids:
                db.execute("UPDATE webhook_deliveries SET attempts = attempts + 1,"
                           " next_at = ?, claimed_by = ? WHERE id = ?",
                           (now + lease_seconds, owner, delivery_id))
                row = db.execute(
                    "SELECT d.id AS delivery_id, d.attempts, d.event, d.event_id, d.payload,"
                    " d.window_start, e.* FROM webhook_deliveries d JOIN webhook_endpoints e"
                    " ON e.id = d.endpoint_id WHERE d.id = ?", (delivery_id,)).fetchone()
                if row is None:  # its endpoint is being deleted: nothing to send to
                    continue
                out.append(Claimed(row["delivery_id"], int(row["attempts"]), _endpoint(row),
                                   row["event"], row["event_id"], row["payload"].encode(),
                                   float(row["window_start"])))
        return out

    def record_attempt(self, claimed: Claimed, at: float, status_code: int | None,
                       error: str | None, seconds: float, outcome: str,
                       next_at: float | None = None) -> bool:
        """The attempt's outcome: ``delivered``, ``given_up``, or ``pending`` again at
        ``next_at``. False (nothing written) when the row moved on since the claim."""
        finished = None if outcome == "pending" else at
        with self._tx() as db:
            cur = db.execute(
                "UPDATE webhook_deliveries SET status = ?, next_at = ?, finished_at = ?,"
                " claimed_by = NULL WHERE id = ? AND attempts = ? AND status = 'pending'",
                (outcome, next_at if next_at is not None else at, finished, claimed.id,
                 claimed.attempt))
            if cur.rowcount != 1:
                return False
            db.execute("INSERT INTO webhook_attempts VALUES (?, ?, ?, ?, ?, ?)"
                       " ON CONFLICT (delivery_id, n) DO NOTHING",
                       (claimed.id, claimed.attempt, at, status_code,
                        None if error is None else error[:500], seconds))
        return True

    # -- what the API shows ----------------------------------------------------------------

    def deliveries(self, domain: str, endpoint_id: str, status: str | None = None,
                   limit: int = 20, before: float | None = None) -> list[dict[str, Any]]:
        """Newest first, with their latest attempts."""
        where, args = "domain = ? AND endpoint_id = ?", [domain, endpoint_id]
        if status is not None:
            where += " AND status = ?"
            args.append(status)
        if before is not None:
            where += " AND created_at < ?"
            args.append(before)
        rows = self._query(f"SELECT * FROM webhook_deliveries WHERE {where}"
                           " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit))
        return self._with_attempts(rows)

    def delivery(self, domain: str, delivery_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM webhook_deliveries WHERE domain = ? AND id = ?",
                           (domain, delivery_id))
        return self._with_attempts(rows)[0] if rows else None

    def resend(self, domain: str, delivery_id: str, now: float | None = None) -> bool:
        """Send again now, with a new retry window (by hand: whatever its status)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute("UPDATE webhook_deliveries SET status = 'pending', next_at = ?,"
                             " window_start = ?, finished_at = NULL, attempts = attempts + 1"
                             " WHERE domain = ? AND id = ?", (now, now, domain, delivery_id))
            # attempts + 1: an attempt in flight now is fenced off, and sends nothing twice
            return cur.rowcount == 1

    def delivery_counts(self, domain: str) -> dict[str, dict[str, int]]:
        """Endpoint id → status → how many deliveries (``tilemore admin webhooks``)."""
        out: dict[str, dict[str, int]] = {}
        for r in self._query("SELECT endpoint_id, status, COUNT(*) AS n FROM"
                             " webhook_deliveries WHERE domain = ? GROUP BY endpoint_id,"
                             " status", (domain,)):
            out.setdefault(r["endpoint_id"], {})[r["status"]] = int(r["n"])
        return out

    def _with_attempts(self, rows: list[Any]) -> list[dict[str, Any]]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        marks = ", ".join("?" * len(ids))
        attempts: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for a in self._query(f"SELECT * FROM webhook_attempts WHERE delivery_id IN ({marks})"
                             " ORDER BY delivery_id, n", ids):
            attempts[a["delivery_id"]].append(
                {"n": int(a["n"]), "at": float(a["at"]), "status_code": a["status_code"],
                 "error": a["error"], "seconds": a["seconds"]})
        return [{"id": r["id"], "endpoint_id": r["endpoint_id"], "event": r["event"],
                 "event_id": r["event_id"], "status": r["status"],
                 "created_at": float(r["created_at"]),
                 "next_at": float(r["next_at"]) if r["status"] == "pending" else None,
                 "finished_at": r["finished_at"], "payload": json.loads(r["payload"]),
                 "attempts": attempts[r["id"]][-ATTEMPTS_LISTED:]} for r in rows]


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(row["id"], row["domain"], row["url"], tuple(row["events"].split()),
                    row["secret"], row["previous_secret"], row["previous_until"],
                    row["low_balance"], float(row["created_at"]))
