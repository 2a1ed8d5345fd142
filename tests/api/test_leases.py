"""Leases on threads, on SQLite and PostgreSQL: conductors share the unfinished threads, a
thread is run by one at a time, a paused conductor's late writes and charges are refused, and
claims are fair between domains."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from tilemore.billing.entries import Charge
from tilemore.billing.service import Billing
from tilemore.store import NewThread, ResultInfo
from tilemore.store.leases import Lease, LeaseLost


def new_thread(key: str, domain: str = "acme") -> NewThread:
    return NewThread(domain=domain, account=domain, idem_key=key, pipeline="p",
                     fingerprint="f", meta_parts=[], image_sha256="0" * 64,
                     input_key="0" * 64, output_format="png", envelope={"adjustments": {}},
                     tasks=[("decode", "decode"), ("encoder", "encoder")])


def test_two_conductors_racing_for_one_thread_one_wins(store, backend):
    rec, _ = store.create_thread(new_thread("race"))
    other = backend.store()  # another process's connection
    got: list[Lease | None] = []
    barrier = threading.Barrier(8)

    def claim(s, owner):
        barrier.wait()
        got.append(s.claim_thread(owner, rec.id, 10))

    racers = [threading.Thread(target=claim, args=(store if i % 2 else other, f"c{i}"))
              for i in range(8)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert [g for g in got if g is not None] == [Lease(rec.id, 1)]


def test_an_expired_lease_moves_and_the_old_holders_writes_are_refused(store, backend):
    rec, _ = store.create_thread(new_thread("pause"))
    first = store.claim_thread("a", rec.id, 10, now=1000.0)
    assert store.claim_thread("b", rec.id, 10, now=1005.0) is None  # still held
    store.tasks_started(rec.id, ["decode"], 1001.0, epoch=first.epoch)
    second = store.claim_thread("b", rec.id, 10, now=1011.0)  # a was paused past its lease
    assert second.epoch == first.epoch + 1
    with pytest.raises(LeaseLost):
        store.task_done(rec.id, "decode", 1001.0, 1012.0, 0.1, "k", epoch=first.epoch)
    with pytest.raises(LeaseLost):
        store.finish_thread(rec.id, None, epoch=first.epoch)  # type: ignore[arg-type]
    ledger = backend.ledger()
    ledger.append([_order()])
    ledger.reserve("acme", "pause", Decimal("2"))
    billing = Billing(ledger)
    charges = [Charge("decode", "decode", 0.1, Decimal("1"))]
    try:
        with pytest.raises(LeaseLost):  # nor may it charge, nor give back the hold
            billing.settle(account="acme", traced_for=None, thread_id=rec.id, hold="pause",
                           charges=charges, epoch=first.epoch)
        assert ledger.thread_cost(rec.id) == 0 and ledger.held("acme") == Decimal("2")
        billing.settle(account="acme", traced_for=None, thread_id=rec.id, hold="pause",
                       charges=charges, epoch=second.epoch)
        assert ledger.thread_cost(rec.id) == 1 and ledger.held("acme") == 0
    finally:
        billing.close()
    store.task_done(rec.id, "decode", 1001.0, 1012.0, 0.1, "k", epoch=second.epoch)
    assert store.renew_leases([first, second], 10, now=1012.0) == [first]
    assert store.get_thread(rec.id).tasks[0].status == "done"


def test_claims_are_fair_between_domains(store):
    many = [store.create_thread(new_thread(f"a{i}"))[0].id for i in range(10)]
    late, _ = store.create_thread(new_thread("r0", domain="rival"))
    claimed = [lease.thread_id for lease in store.claim_threads("c", 2, 10)]
    assert claimed == [many[0], late.id]  # the other domain does not wait behind ten
    assert store.backlog() == {"acme": 10, "rival": 1}
    rest = store.claim_threads("d", 100, 10)
    assert {lease.thread_id for lease in rest} == set(many[1:])


def test_concurrent_claims_take_different_threads(store, backend):
    ids = {store.create_thread(new_thread(f"k{i}"))[0].id for i in range(20)}
    stores = [store, backend.store(), backend.store()]
    got: list[list[Lease]] = [[] for _ in stores]

    def claim(i):
        for _ in range(5):
            got[i].extend(stores[i].claim_threads(f"c{i}", 2, 10))

    workers = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    taken = [lease.thread_id for g in got for lease in g]
    assert sorted(taken) == sorted(ids)  # every thread once, none twice


def test_a_released_lease_is_claimable_at_once(store):
    rec, _ = store.create_thread(new_thread("give-back"))
    lease = store.claim_thread("a", rec.id, 60)
    store.release_lease(lease)
    assert store.claim_thread("b", rec.id, 60) == Lease(rec.id, lease.epoch + 1)


@pytest.mark.parametrize("end", ["done", "failed", "canceled"])
def test_a_threads_end_gives_its_lease_back_in_the_same_write(store, end):
    rec, _ = store.create_thread(new_thread(f"end-{end}"))
    lease = store.claim_thread("a", rec.id, 60)
    if end == "done":
        store.finish_thread(rec.id, ResultInfo("k", "k", 1, "image/png", 1, 1),
                            epoch=lease.epoch)
    elif end == "failed":
        store.fail_thread(rec.id, "operator_failed", "boom", "decode", epoch=lease.epoch)
    else:
        store.mark_canceled(rec.id, epoch=lease.epoch)
    row = store._query("SELECT status, lease_owner, lease_until FROM threads"  # noqa: SLF001
                       " WHERE id = ?", (rec.id,))[0]
    assert (row["status"], row["lease_owner"], row["lease_until"]) == (end, None, None)
    assert store.renew_leases([lease], 60) == [lease]  # a run still holding it stops
    assert store.claim_thread("b", rec.id, 60) is None  # and nobody claims an ended thread


def _order():
    from tilemore.billing.ledger import Entry

    return Entry("acme", "order", Decimal("100"), reference="o1")
