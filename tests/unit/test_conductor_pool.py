"""The conductor pool follows the backlog: more conductors at once when threads queue up,
fewer only after the backlog stayed low, each leaving one drained first (it takes no new
thread and finishes its own). Real conductors on a real store and ledger (SQLite and
PostgreSQL), in this process (no Ray)."""

from __future__ import annotations

from support.waits import until

from tilemore.billing.service import Billing
from tilemore.service.conductor_pool import ConductorPool, PoolPolicy


def test_the_policy_asks_one_conductor_per_concurrency_between_floor_and_ceiling():
    policy = PoolPolicy(minimum=2, maximum=5, concurrency=16)
    assert [policy.wanted(n) for n in (0, 16, 33, 64, 80, 10_000)] == [2, 2, 3, 4, 5, 5]


def test_conductors_come_with_the_backlog_and_drain_before_they_go(parts):
    billing = Billing(parts.ledger)
    now = [0.0]
    started: dict[int, object] = {}
    stopped: list[int] = []

    def start(slot: int):
        c = parts.conductor(billing, concurrency=2, name=f"c{slot}", claim_seconds=0.05)
        started[slot] = c
        return c

    def stop(c) -> None:
        c.close()
        stopped.append(next(s for s, x in started.items() if x is c))

    pool = ConductorPool(PoolPolicy(1, 3, concurrency=2, downscale_seconds=30),
                         backlog=lambda: sum(parts.store.backlog().values()),
                         start=start, drain=lambda c: c.drain(), stop=stop,
                         clock=lambda: now[0])
    assert pool.step() == 1 and not started  # nothing queued: the floor (slot 0 itself)
    ids = [parts.accept(f"k{i}").id for i in range(6)]
    assert pool.step() == 3 and sorted(started) == [1, 2]  # 6 queued, 2 each: 3 conductors
    for c in started.values():
        c.start_sweeping()  # they claim the queued threads (slot 0 is not in this test)
    assert until(lambda: all(parts.store.get_thread(i).status == "done" for i in ids), 60)

    assert pool.step() == 3  # the backlog is gone, but not for long enough yet
    now[0] += 29
    assert pool.step() == 3
    now[0] += 2
    assert pool.step() == 1 and sorted(stopped) == [1, 2]  # drained idle, then stopped
    assert all(c.drain() == 0 for c in started.values())
    billing.close()


def test_a_drained_conductor_takes_no_new_thread_and_finishes_its_own(parts):
    billing = Billing(parts.ledger)
    conductor = parts.conductor(billing, concurrency=4, name="leaving")
    first = parts.accept("k-first")
    assert conductor.submit(first.id)  # running here
    left = conductor.drain()
    assert left in (0, 1)  # 1 while it runs; it may have finished already
    second = parts.accept("k-second")
    assert conductor.submit(second.id) is False and conductor.claim() == 0
    assert until(lambda: parts.store.get_thread(first.id).status == "done", 30)
    assert until(lambda: conductor.drain() == 0, 10)  # its own thread finished: it may be stopped
    assert parts.store.get_thread(second.id).status == "processing"  # left for the others
    conductor.close()
    billing.close()
