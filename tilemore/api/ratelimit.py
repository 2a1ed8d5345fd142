"""Requests a second per domain and per sub-account, held across every ingress replica.

Each replica keeps a token bucket per limited subject (a domain, or a sub-account
``domain/name``), so a request is admitted or refused in memory, without a database round
trip. The replicas split each limit between them by demand: every ``sync_seconds`` a replica
writes, in one transaction, how many requests a second it saw for each subject and reads
everyone's (:meth:`~tilemore.store.limits.LimitStore.share_demand`); its bucket then fills
at ``limit × its demand / everyone's``. The shares add up to the whole limit, so N replicas
together admit the limit (plus one burst), not N times it. The sync rides on requests (the
one that finds it due runs it, off the event loop), so an idle replica costs nothing.

A request over the limit gets ``429 rate_limited`` with ``Retry-After`` and the IETF draft's
``RateLimit`` and ``RateLimit-Policy`` fields (draft-ietf-httpapi-ratelimit-headers); admitted
requests carry them too. When the shared state cannot be reached, ``on_error`` says what
happens: ``open``, each replica limits alone to the whole rate; ``closed``, a limited subject's
requests get ``503 rate_limit_unavailable``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tilemore.errors import ServiceUnavailable, TooManyRequests
from tilemore.settings_parts import RateLimitSettings
from tilemore.store.limits import Limit, ThreadQuota

log = logging.getLogger("tilemore.api.ratelimit")

IDLE_SECONDS = 60.0  # a bucket nobody used this long is dropped


class RateLimited(TooManyRequests):
    code = "rate_limited"


class RateLimitUnavailable(ServiceUnavailable):
    code = "rate_limit_unavailable"
    retry_after = 1


@dataclass
class _Bucket:
    rate: float  # the subject's whole limit, requests a second
    level: float
    at: float
    share: float  # this replica's part of the limit
    arrivals: int = 0  # requests seen since the last sync, admitted or not
    used: float = 0.0  # when last asked

    def refill(self, now: float, burst_seconds: float) -> tuple[float, float]:
        """(this replica's rate, its bucket's capacity), after filling it up to ``now``."""
        rate = self.rate * self.share
        capacity = max(1.0, self.rate * burst_seconds) * self.share
        self.level = min(capacity, self.level + (now - self.at) * rate)
        self.at = now
        return rate, capacity


class RateLimiter:
    def __init__(self, store: Any, *, requests_per_second: float | None = None,
                 concurrent_threads: int | None = None, burst_seconds: float = 0.5,
                 sync_seconds: float = 0.5, on_error: str = "open",
                 replica: str | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.default_rps, self.default_threads = requests_per_second, concurrent_threads
        self.burst_seconds, self.sync_seconds, self.on_error = (
            burst_seconds, sync_seconds, on_error)
        self.replica = replica or uuid.uuid4().hex
        self.clock, self.wall = clock, wall
        self._limits: dict[str, Limit] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._live = 1
        self._lock = threading.Lock()
        self._syncing = threading.Lock()
        self._next_sync = clock()  # the first request syncs
        self._read_once = False  # the limits as set, read (or tried) at least once
        self._synced_at = clock()
        self.unreachable = False  # the last sync failed

    @classmethod
    def from_settings(cls, store: Any, settings: RateLimitSettings) -> RateLimiter:
        return cls(store, requests_per_second=settings.rate_limit_requests_per_second,
                   concurrent_threads=settings.rate_limit_concurrent_threads,
                   burst_seconds=settings.rate_limit_burst_seconds,
                   sync_seconds=settings.rate_limit_sync_seconds,
                   on_error=settings.rate_limit_on_error)

    # -- limits ------------------------------------------------------------------------

    def rate_of(self, subject: str, domain: bool) -> float | None:
        """The subject's limit in requests a second (None: none). A domain without its own
        gets the service's default; a sub-account without its own has none (its domain's
        applies to it too)."""
        limit = self._limits.get(subject)
        rps = limit.requests_per_second if limit else None
        if rps is None and domain:
            rps = self.default_rps
        return rps or None  # 0: no limit

    def quota(self, domain: str, account: str) -> ThreadQuota | None:
        """The running-thread limits a new thread of ``account`` must fit (None: none)."""
        mine, parent = self._limits.get(account), self._limits.get(domain)
        in_domain = parent.concurrent_threads if parent else None
        if in_domain is None:
            in_domain = self.default_threads
        in_account = mine.concurrent_threads if mine and account != domain else None
        if not in_domain and not in_account:
            return None
        return ThreadQuota(in_domain or None, in_account or None)

    # -- admission ---------------------------------------------------------------------

    def admit(self, domain: str, account: str) -> list[tuple[str, _Bucket, float, float]]:
        """Take one request from the domain's bucket and the sub-account's (both, or
        neither). Returns what the RateLimit fields describe; raises :class:`RateLimited`
        (or :class:`RateLimitUnavailable`, closed and unreachable). In memory: cheap."""
        subjects = [("domain", domain, True)]
        if account != domain:
            subjects.append(("account", account, False))
        now = self.clock()
        taken: list[tuple[str, _Bucket, float, float]] = []
        with self._lock:
            for name, subject, is_domain in subjects:
                rate = self.rate_of(subject, is_domain)
                if rate is None:
                    continue
                if self.unreachable and self.on_error == "closed":
                    raise RateLimitUnavailable("the rate-limit state cannot be read right now")
                bucket = self._bucket(subject, rate, now)
                bucket.arrivals += 1
                bucket.used = now
                local, capacity = bucket.refill(now, self.burst_seconds)
                taken.append((name, bucket, local, capacity))
            short = [(b, r) for _, b, r, _ in taken if b.level < 1]
            if short:
                wait = max((1 - b.level) / r if r > 0 else self.sync_seconds for b, r in short)
                err = RateLimited(f"over the rate limit; try again in {wait:.2f} s")
                err.retry_after = max(1, math.ceil(wait))
                err.headers = fields(taken, self.burst_seconds)
                raise err
            for _, b, _, _ in taken:
                b.level -= 1
        return taken

    def _bucket(self, subject: str, rate: float, now: float) -> _Bucket:
        bucket = self._buckets.get(subject)
        share = 1.0 if self.unreachable else 1.0 / self._live  # until a sync says better
        if bucket is None:
            capacity = max(1.0, rate * self.burst_seconds) * share
            bucket = self._buckets[subject] = _Bucket(rate, capacity, now, share)
            self._next_sync = now  # a subject new here: learn its share at once
        elif bucket.rate != rate:
            bucket.rate = rate
        return bucket

    # -- sharing -----------------------------------------------------------------------

    def maybe_sync(self) -> None:
        """Sync if it is due and nobody else is at it. Blocking (the database): call it off
        the event loop. Until the limits have been read once, every request waits for that
        first read: otherwise the requests arriving with the replica's first one (while it
        reads) went through as if the domain had no limit."""
        if not self._read_once:
            with self._syncing:
                if not self._read_once:
                    self._next_sync = self.clock() + self.sync_seconds
                    self.sync()
                    self._read_once = True  # even if it failed: on_error says what then
            return
        if self.clock() < self._next_sync or not self._syncing.acquire(blocking=False):
            return
        try:
            self._next_sync = self.clock() + self.sync_seconds
            self.sync()
        finally:
            self._syncing.release()

    def sync(self) -> None:
        """Share this replica's demand, read everyone's and the limits as set."""
        now = self.clock()
        with self._lock:
            elapsed = max(now - self._synced_at, 1e-3)
            demand = {s: b.arrivals / elapsed for s, b in self._buckets.items()
                      if b.arrivals or now - b.used < 3 * self.sync_seconds}
            counted = {s: b.arrivals for s, b in self._buckets.items()}
        try:
            limits = self.store.rate_limits()
            if demand:
                totals, live = self.store.share_demand(self.replica, demand, self.wall(),
                                                       fresh=3 * self.sync_seconds)
            else:  # nothing limited is busy here: read the limits, write nothing
                totals, live = {}, self._live
        except Exception as exc:  # noqa: BLE001 - any failure: the state is unreachable
            if not self.unreachable:
                log.warning("rate-limit state unreachable (%s); failing %s", exc,
                            self.on_error)
            with self._lock:
                self.unreachable = True
                for b in self._buckets.values():
                    b.share = 1.0  # open: each replica alone, to the whole rate
            return
        with self._lock:
            self._limits, self._live, self.unreachable = limits, live, False
            self._synced_at = now
            for subject, bucket in list(self._buckets.items()):
                bucket.arrivals -= counted.get(subject, 0)  # those since stay for next time
                if now - bucket.used > IDLE_SECONDS:
                    del self._buckets[subject]
                    continue
                mine, total = demand.get(subject, 0.0), totals.get(subject, 0.0)
                bucket.refill(now, self.burst_seconds)
                bucket.share = mine / total if mine > 0 and total > 0 else 1.0 / live
                bucket.refill(now, self.burst_seconds)  # clamp to the new capacity


def fields(taken: list[tuple[str, _Bucket, float, float]],
           burst_seconds: float) -> dict[str, str]:
    """The draft's ``RateLimit-Policy`` (quota ``q`` per window ``w`` seconds, the whole
    limit) and ``RateLimit`` (``r`` left now, ``t`` seconds until the bucket is full)."""
    policies, states = [], []
    for name, bucket, rate, capacity in taken:
        window = 1 if bucket.rate >= 1 else math.ceil(1 / bucket.rate)
        policies.append(f'"{name}";q={max(1, round(bucket.rate * window))};w={window}')
        left = max(0, math.floor(bucket.level))
        full = 0 if rate <= 0 else math.ceil(max(0.0, capacity - bucket.level) / rate)
        states.append(f'"{name}";r={left};t={full}')
    if not taken:
        return {}
    return {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states)}


class RateLimitHeaders:
    """ASGI middleware: an admitted request's ``RateLimit`` fields, which
    :func:`~tilemore.api.auth.authenticated` leaves in the request's state, go on its
    answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get("ratelimit")
                if extra:
                    names = {k.lower() for k, _ in message.get("headers", [])}
                    message["headers"] = [*message.get("headers", []), *(
                        (k.lower().encode(), v.encode()) for k, v in extra.items()
                        if k.lower().encode() not in names)]
            await send(message)

        await self.app(scope, receive, send_with_fields)
