"""Rate limits and thread quotas in the shared database: the limits an operator set, each
ingress replica's recent demand (so replicas split a limit between them), and the count of
a domain's or sub-account's running threads, checked where a thread is inserted.

A subject is a domain (``acme``) or a sub-account (``acme/studio``). In ``rate_limits`` a
NULL column means "the service's default", ``0`` "no limit".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tilemore.errors import TooManyRequests

LIMITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_limits (
    subject TEXT PRIMARY KEY,
    requests_per_second {real},
    concurrent_threads INTEGER,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_demand (
    replica TEXT NOT NULL,
    subject TEXT NOT NULL,
    demand {real} NOT NULL,
    seen_at {real} NOT NULL,
    PRIMARY KEY (replica, subject)
);
CREATE INDEX IF NOT EXISTS threads_running_domain ON threads(domain)
    WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS threads_running_account ON threads(account)
    WHERE status = 'processing';
"""
HEARTBEAT = "*"  # every syncing replica's row: how many replicas share the limits
FORGET_SECONDS = 60.0  # demand rows older than this are deleted by whoever syncs


@dataclass(frozen=True)
class Limit:
    """A subject's limits as set: None for the service's default, 0 for none."""

    requests_per_second: float | None = None
    concurrent_threads: int | None = None


@dataclass(frozen=True)
class ThreadQuota:
    """The most threads a domain and a sub-account may have running (None: no limit)."""

    domain: int | None = None
    account: int | None = None


class TooManyThreads(TooManyRequests):
    code = "too_many_threads"
    retry_after = 2


class LimitStore:
    """Mixed into :class:`~tilemore.store.sql.SQLStore`."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]
    domain_lock: str = ""  # SQL that serialises one domain's inserts ("" where the tx does)

    def rate_limits(self) -> dict[str, Limit]:
        rows = self._query("SELECT * FROM rate_limits")
        return {r["subject"]: Limit(r["requests_per_second"], r["concurrent_threads"])
                for r in rows}

    def set_rate_limit(self, subject: str, limit: Limit) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO rate_limits VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO"
                       " UPDATE SET requests_per_second = excluded.requests_per_second,"
                       " concurrent_threads = excluded.concurrent_threads,"
                       " updated_at = excluded.updated_at",
                       (subject, limit.requests_per_second, limit.concurrent_threads,
                        time.time()))

    def share_demand(self, replica: str, demand: dict[str, float], now: float,
                     fresh: float) -> tuple[dict[str, float], int]:
        """Record this replica's demand (requests a second, per subject) and read everyone's:
        (each subject's total demand across replicas seen within ``fresh`` seconds, how many
        replicas those are). One transaction."""
        with self._tx() as db:
            db.execute("DELETE FROM rate_demand WHERE replica = ? OR seen_at < ?",
                       (replica, now - FORGET_SECONDS))
            db.executemany("INSERT INTO rate_demand VALUES (?, ?, ?, ?)",
                           [(replica, s, d, now) for s, d in {**demand, HEARTBEAT: 0.0}.items()])
            rows = db.execute("SELECT subject, SUM(demand) AS total, COUNT(*) AS n"
                              " FROM rate_demand WHERE seen_at >= ? GROUP BY subject",
                              (now - fresh,)).fetchall()
        totals = {r["subject"]: float(r["total"]) for r in rows}
        live = max([int(r["n"]) for r in rows if r["subject"] == HEARTBEAT] or [1])
        totals.pop(HEARTBEAT, None)
        return totals, live

    def running_threads(self, domain: str, account: str) -> tuple[int, int]:
        """(the domain's running threads, the account's)."""
        return _running(self._query, domain, account)

    def _within_quota(self, db: Any, domain: str, account: str, idem_key: str,
                      quota: ThreadQuota) -> None:
        """Inside the insert's transaction: refuse a new thread past the quota (a replay of
        an existing one is never refused). Inserts for one domain are serialised first, so
        two replicas cannot both take the last place."""
        if db.execute("SELECT 1 FROM threads WHERE idem_key = ?", (idem_key,)).fetchall():
            return
        if self.domain_lock:
            db.execute(self.domain_lock, (domain,))
        in_domain, in_account = _running(
            lambda sql, args: db.execute(sql, args).fetchall(), domain, account)
        check_quota(quota, in_domain, in_account, account != domain)


def _running(query: Callable[..., list[Any]], domain: str, account: str) -> tuple[int, int]:
    rows = query("SELECT COUNT(*) AS n FROM threads WHERE status = 'processing' AND domain = ?",
                 (domain,))
    in_domain = int(rows[0]["n"])
    if account == domain:
        return in_domain, in_domain
    rows = query("SELECT COUNT(*) AS n FROM threads WHERE status = 'processing'"
                 " AND account = ?", (account,))
    return in_domain, int(rows[0]["n"])


def check_quota(quota: ThreadQuota, in_domain: int, in_account: int, sub: bool) -> None:
    if quota.domain is not None and in_domain >= quota.domain:
        raise TooManyThreads(f"the domain has {in_domain} threads running, its limit; "
                             "submit again when one ends")
    if sub and quota.account is not None and in_account >= quota.account:
        raise TooManyThreads(f"this sub-account has {in_account} threads running, its "
                             "limit; submit again when one ends")
