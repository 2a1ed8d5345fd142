"""Rate limits across ingress replicas, on a real database (SQLite and PostgreSQL): replicas
that share their demand admit the limit between them, within 10 % over any 10 s window,
however the load moves between them; the shared state unreachable fails open or closed as
set."""

from __future__ import annotations

import threading

import pytest
from support import postgres
from support.waits import until

from tilemore.api.ratelimit import RateLimited, RateLimiter, RateLimitUnavailable, fields
from tilemore.store.limits import Limit, ThreadQuota
from tilemore.store.postgres import PostgresStore


class Clock:
    """Simulated time, shared by the replicas (monotonic and wall clock alike)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1.8e9 + self.now


def replicas(stores, clock, **kw) -> list[RateLimiter]:
    return [RateLimiter(s, replica=f"r{i}", clock=clock, wall=clock.wall, **kw)
            for i, s in enumerate(stores)]


def request(limiter: RateLimiter, domain: str = "acme", account: str = "acme") -> bool:
    """What the ingress does per request: sync when due, then admit or refuse."""
    limiter.maybe_sync()
    try:
        limiter.admit(domain, account)
    except RateLimited:
        return False
    return True


def windows(times: list[float], start: float, end: float, width: float = 10.0) -> list[int]:
    """Admitted requests in every ``width``-second window from ``start`` to ``end``, sliding
    by 0.1 s."""
    counts, i = [], 0
    while start + i * 0.1 + width <= end + 1e-9:
        lo = start + i * 0.1
        counts.append(sum(lo <= t < lo + width for t in times))
        i += 1
    return counts


def test_replicas_share_one_limit_as_the_load_moves(backend):
    """Three replicas, 100 requests a second allowed. The load is uneven and moves: replica
    0 gets 300/s throughout, replica 1 60/s, replica 2 nothing for 8 s then 200/s. Together
    they admit 100/s, within 10 %, over every 10 s window."""
    rate, clock = 100.0, Clock()
    stores = [backend.store() for _ in range(3)]
    limiters = replicas(stores, clock, requests_per_second=rate)
    offered = [lambda t: 300.0, lambda t: 60.0, lambda t: 0.0 if t < 8 else 200.0]
    debt = [0.0, 0.0, 0.0]
    admitted: list[float] = []
    step = 0.002
    while clock.now < 20.0:
        for i, limiter in enumerate(limiters):
            debt[i] += offered[i](clock.now) * step
            while debt[i] >= 1:
                debt[i] -= 1
                if request(limiter):
                    admitted.append(clock.now)
        clock.now += step
    counts = windows(admitted, 0.0, 20.0)
    print(f"admitted per 10 s window: {min(counts)}..{max(counts)} (limit {rate * 10:g})")
    assert max(counts) <= 1.1 * rate * 10, max(counts)
    assert min(counts) >= 0.9 * rate * 10, min(counts)
    # and without sharing (each replica alone), the same load would have had 3x the limit
    assert len(admitted) <= 1.1 * rate * 20


def test_requests_wait_for_the_replicas_first_read_of_the_limits(backend):
    """A request arriving while a new replica reads the limits for the first time waits for
    them: it went through as if the domain had no limit (two live replicas on PostgreSQL let
    such requests through without the RateLimit fields)."""
    store = backend.store()
    store.set_rate_limit("acme", Limit(requests_per_second=0.1))  # one now, the next in 10 s
    reading, release = threading.Event(), threading.Event()

    class SlowRead:  # the store, its first read of the limits held until released
        def __getattr__(self, name):
            return getattr(store, name)

        def rate_limits(self):
            reading.set()
            release.wait(10)
            return store.rate_limits()

    limiter = RateLimiter(SlowRead(), burst_seconds=1.0)
    seen: list[bool] = []
    first = threading.Thread(target=lambda: seen.append(request(limiter)))
    first.start()
    assert reading.wait(10)
    second = threading.Thread(target=lambda: seen.append(request(limiter)))
    second.start()
    second.join(0.5)  # without the wait it is done by now, admitted unlimited
    release.set()
    first.join(10)
    second.join(10)
    assert sorted(seen) == [False, True]  # one admitted, the limit's one; not both


def test_a_sub_account_has_its_limit_within_its_domains(backend):
    clock = Clock()
    store = backend.store()
    store.set_rate_limit("acme/studio", Limit(requests_per_second=2))
    store.set_rate_limit("acme", Limit(requests_per_second=10, concurrent_threads=5))
    store.set_rate_limit("free", Limit(requests_per_second=0))  # 0: no limit
    (limiter,) = replicas([store], clock, requests_per_second=50, burst_seconds=1)
    limiter.sync()
    studio = sum(request(limiter, "acme", "acme/studio") for _ in range(20))
    assert studio == 2  # its own bucket: 2 a second, a 1 s burst
    assert sum(request(limiter) for _ in range(20)) == 8  # the domain's 10, less studio's 2
    assert all(request(limiter, "free", "free") for _ in range(500))
    assert sum(request(limiter, "other", "other") for _ in range(100)) == 50  # the default
    clock.now += 1.0  # a second later: a second's worth again
    assert sum(request(limiter, "acme", "acme/studio") for _ in range(20)) == 2
    assert limiter.quota("acme", "acme/studio") == ThreadQuota(5, None)
    store.set_rate_limit("acme/studio", Limit(concurrent_threads=1))
    limiter.sync()
    assert limiter.quota("acme", "acme/studio") == ThreadQuota(5, 1)
    assert limiter.quota("free", "free") is None


def test_the_refusal_says_when_and_how_much():
    clock = Clock()
    limiter = RateLimiter(_NoStore(), requests_per_second=4, burst_seconds=0.5, clock=clock)
    assert request(limiter) and request(limiter)
    with pytest.raises(RateLimited) as err:
        limiter.admit("acme", "acme")
    refused = err.value
    assert (refused.status, refused.code, refused.retry_after) == (429, "rate_limited", 1)
    assert refused.headers["RateLimit-Policy"] == '"domain";q=4;w=1'
    assert refused.headers["RateLimit"] == '"domain";r=0;t=1'
    clock.now += 0.25
    taken = limiter.admit("acme", "acme")
    assert fields(taken, 0.5)["RateLimit"] == '"domain";r=0;t=1'
    slow = RateLimiter(_NoStore(), requests_per_second=0.1, clock=clock)
    assert request(slow) and not request(slow)
    assert fields([], 0.5) == {}  # nothing limited: no fields


class _NoStore:
    """A replica alone, before its first sync: no limits set, no other replicas."""

    def rate_limits(self) -> dict:
        return {}

    def share_demand(self, replica, demand, now, fresh):
        return dict(demand), 1


def test_unreachable_state_fails_open_or_closed():
    """PostgreSQL stops under two replicas: 'closed' refuses limited requests with 503,
    'open' goes on limiting alone to the whole rate; both recover once it is back."""
    cluster = postgres.cluster_or_give_up()
    try:
        stores = [PostgresStore(cluster.dsn), PostgresStore(cluster.dsn)]
        clock = Clock()
        closed, open_ = (RateLimiter(s, replica=f"r{i}", clock=clock, wall=clock.wall,
                                     requests_per_second=10, burst_seconds=1,
                                     on_error=mode)
                         for i, (s, mode) in enumerate(zip(stores, ("closed", "open"),
                                                           strict=True)))
        for _ in range(4):  # both busy: each gets half the limit
            clock.now += 0.5
            for limiter in (closed, open_):
                for _ in range(10):
                    request(limiter)
        clock.now += 1.0
        assert sum(request(open_) for _ in range(30)) <= 6  # its share: about 5 a second
        cluster.stop()
        clock.now += 1.0
        with pytest.raises(RateLimitUnavailable) as err:
            closed.maybe_sync()
            closed.admit("acme", "acme")
        assert (err.value.status, err.value.code) == (503, "rate_limit_unavailable")
        open_.maybe_sync()
        assert open_.unreachable
        clock.now += 1.0
        assert 9 <= sum(request(open_) for _ in range(30)) <= 11  # alone: the whole rate
        cluster.start()
        clock.now += 1.0

        def healed() -> bool:  # the pool reconnects on its own, in real time
            clock.now += 0.5
            closed.sync()
            return not closed.unreachable

        assert until(healed, timeout=30)
        assert request(closed)
        for s in stores:
            s.close()
    finally:
        cluster.destroy()


def test_limits_are_set_and_shown_in_tilemore_admin(backend, monkeypatch, capsys):
    import json

    from tilemore.cli import main

    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TILEMORE_RATE_LIMIT_REQUESTS_PER_SECOND", "50")
    store = backend.store()
    store.create_domain("acme")
    store.create_subaccount("acme", "studio")
    assert main(["admin", "set-limits", "acme", "--concurrent-threads", "8"]) == 0
    assert capsys.readouterr().out.strip() == \
        "acme: 50 (default) requests/s, 8 concurrent threads"
    assert main(["admin", "set-limits", "acme", "--account", "studio",
                 "--requests-per-second", "2.5"]) == 0
    assert main(["admin", "set-limits", "acme", "--requests-per-second", "off"]) == 0
    capsys.readouterr()
    assert main(["admin", "limits", "acme", "--json"]) == 0
    rows = {r["account"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["acme"]["requests_per_second"] == {"set": 0, "applies": None}
    assert rows["acme"]["concurrent_threads"] == {"set": 8, "applies": 8}
    assert rows["acme/studio"]["requests_per_second"] == {"set": 2.5, "applies": 2.5}
    assert store.rate_limits()["acme"] == Limit(0, 8)
    assert main(["admin", "limits", "acme"]) == 0
    assert "no limit (off)" in capsys.readouterr().out
    for argv, words in [(["set-limits", "acme"], "give --requests-per-second"),
                        (["set-limits", "acme", "--concurrent-threads", "-1"], "more than 0"),
                        (["set-limits", "acme", "--requests-per-second", "fast"], "a number"),
                        (["set-limits", "nobody", "--concurrent-threads", "1"], "no domain"),
                        (["set-limits", "acme", "--account", "x", "--concurrent-threads", "1"],
                         "no sub-account")]:
        assert main(["admin", *argv]) == 1
        assert words in capsys.readouterr().err


def _new(key: str, account: str = "acme"):
    from tilemore.store import NewThread

    return NewThread(domain="acme", account=account, idem_key=key, pipeline="p",
                     fingerprint="f", meta_parts=[], image_sha256="0" * 64, input_key="k",
                     output_format="png", envelope={}, tasks=[("t", "op")])


def test_the_thread_quota_holds_under_concurrent_inserts(backend):
    """Eight replicas insert at once with one place left: exactly one gets it; a replay of
    an existing thread is never refused; the sub-account's own quota counts its own."""
    from concurrent.futures import ThreadPoolExecutor

    from tilemore.store.limits import TooManyThreads

    store = backend.store()
    store.create_domain("acme")
    store.create_subaccount("acme", "studio")
    quota = ThreadQuota(domain=3, account=1)
    store.create_thread(_new("a"), quota)
    store.create_thread(_new("s1", "acme/studio"), quota)
    with pytest.raises(TooManyThreads) as err:
        store.create_thread(_new("s2", "acme/studio"), quota)
    assert (err.value.status, err.value.code) == (429, "too_many_threads")
    stores = [backend.store() for _ in range(8)]

    def insert(i: int) -> bool:
        try:
            stores[i].create_thread(_new(f"race-{i}"), quota)
            return True
        except TooManyThreads:
            return False

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(insert, range(8)))
    assert sum(won) == 1
    assert store.running_threads("acme", "acme/studio") == (3, 1)
    record, created = store.create_thread(_new("a"), quota)  # a replay, at the limit
    assert not created and record.idem_key == "a"
    store.mark_canceled(record.id)
    assert store.create_thread(_new("b"), quota)[1]  # a place came free
