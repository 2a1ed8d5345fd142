"""A conductor's side of the leases (tilemore.service.claims), on SQLite and PostgreSQL: it
takes threads up to its slots, stops taking when it drains, notices a lease another conductor
took, and gives its leases back so that another conductor can take them at once."""

from __future__ import annotations

import time

import pytest
from test_leases import new_thread

from tilemore.service.claims import Claims
from tilemore.store.leases import LeaseLost


def test_a_conductor_takes_up_to_its_slots_and_never_one_thread_twice(store):
    ids = [store.create_thread(new_thread(f"slot{i}"))[0].id for i in range(3)]
    claims = Claims(store, "c0", lease_seconds=10, slots=2)
    first = claims.take(ids[0])
    assert first is not None and claims.epoch(ids[0]) == first.epoch
    assert claims.take(ids[0]) is None  # it runs here already
    assert len(claims.take_free()) == 1  # one slot left
    assert claims.running() == 2
    assert claims.take(ids[2]) is None  # full
    assert claims.take(ids[2], bounded=False) is not None  # driven by hand: no bound


def test_a_draining_conductor_takes_nothing_and_counts_what_it_still_runs(store):
    ids = [store.create_thread(new_thread(f"drain{i}"))[0].id for i in range(2)]
    claims = Claims(store, "c0", lease_seconds=10, slots=4)
    assert claims.take(ids[0]) is not None
    assert claims.drain() == 1
    assert claims.take(ids[1]) is None and claims.take_free() == []
    claims.forget(ids[0])
    assert claims.running() == 0


def test_a_lease_another_conductor_took_is_lost_here_and_not_given_back(store, backend):
    rec, _ = store.create_thread(new_thread("lost"))
    here = Claims(store, "c0", lease_seconds=0.2, slots=4)
    held = here.take(rec.id)
    time.sleep(0.3)  # paused past its lease
    there = Claims(backend.store(), "c1", lease_seconds=10, slots=4)
    taken = there.take(rec.id)
    assert taken is not None and taken.epoch == held.epoch + 1
    assert here.renew() == [held]
    with pytest.raises(LeaseLost):
        here.epoch(rec.id)
    assert not here.holds(rec.id) and here.last_epoch(rec.id) == held.epoch
    here.give_back(rec.id)  # releases nothing: the lease is the other's now
    assert here.running() == 0
    assert there.renew() == [] and there.epoch(rec.id) == taken.epoch


def test_a_lease_given_back_is_taken_elsewhere_at_once(store, backend):
    rec, _ = store.create_thread(new_thread("back"))
    here = Claims(store, "c0", lease_seconds=60, slots=4)
    there = Claims(backend.store(), "c1", lease_seconds=60, slots=4)
    assert here.take(rec.id) is not None
    assert there.take(rec.id) is None  # held
    here.give_back(rec.id)
    assert there.take(rec.id) is not None
    assert here.take_one(rec.id) is None  # even its own kind of claim waits for the holder
