"""The conductor gives back a thread's hold on every way it ends — given up on, its input
lost — settles a thread whose settlement met a database outage when it runs it next, and
sweeps holds no thread owns. A real
store and ledger (SQLite and PostgreSQL), the in-process backend (no Ray)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tilemore.billing.service import Billing
from tilemore.engine import LocalBackend
from tilemore.errors import DatabaseUnavailable

D = Decimal

@pytest.fixture
def billing(parts):
    b = Billing(parts.ledger)
    yield b
    b.close()


def test_a_thread_given_up_on_gives_back_its_hold(parts, billing):
    class Broken(LocalBackend):
        def put(self, value):
            raise ConnectionError("the cluster is gone")

    rec = parts.accept("k-broken")
    conductor = parts.conductor(billing, Broken(parts.settings))
    for _ in range(2):
        conductor._run_guarded(rec.id)  # noqa: SLF001 - what a sweep runs
        assert parts.ledger.held("acme") == D("1")  # a retry is coming: still set aside
    conductor._run_guarded(rec.id)  # noqa: SLF001
    assert parts.store.get_thread(rec.id).error_code == "internal_error"
    assert parts.ledger.held("acme") == D("0")


def test_a_thread_given_up_on_is_charged_for_the_tasks_it_finished(parts, billing):
    rec = parts.accept("k-half")
    parts.store.task_done(rec.id, "decode", 1.0, 2.0, 0.5, "k")  # an earlier run's work
    parts.conductor(billing)._give_up(rec.id, "gave up after 3 attempts")  # noqa: SLF001
    failed = parts.store.get_thread(rec.id)
    assert (failed.status, failed.error_code) == ("failed", "internal_error")
    charges = [e for e in parts.ledger.entries("acme") if e["kind"] == "charge"]
    assert [(e["task_id"], e["megapixels"]) for e in charges] == [("decode", 0.5)]
    assert parts.ledger.held("acme") == D("0")
    assert parts.ledger.balance("acme") == D("10") - parts.ledger.thread_cost(rec.id) < D("10")


def test_a_lost_input_fails_at_once_with_blob_not_found(parts, billing):
    rec = parts.accept("k-lost")
    (parts.settings.blob_path / rec.input_key[:2] / rec.input_key).unlink()
    conductor = parts.conductor(billing)
    conductor._run_guarded(rec.id)  # noqa: SLF001 - one attempt, not three
    failed = parts.store.get_thread(rec.id)
    assert (failed.status, failed.error_code) == ("failed", "blob_not_found")
    assert "submit it again" in failed.error_message
    assert parts.ledger.held("acme") == D("0") and parts.ledger.balance("acme") == D("10")
    assert parts.store.unfinished_threads() == []


def test_a_settlement_refused_by_an_outage_keeps_the_thread_running_until_it_settles(parts):
    class Outage(Billing):
        """The database goes away just as the thread ends, and comes back."""

        down = True

        def settle(self, **kwargs):
            if self.down:
                raise DatabaseUnavailable("PostgreSQL at db:5432/tilemore is unavailable")
            return super().settle(**kwargs)

    billing = Outage(parts.ledger)
    try:
        rec = parts.accept("k-outage")
        conductor = parts.conductor(billing)
        conductor._run_guarded(rec.id)  # noqa: SLF001 - what a sweep runs
        # never recorded done unpaid: it waits, its hold still set aside, nothing charged
        assert parts.store.get_thread(rec.id).status == "processing"
        assert parts.ledger.held("acme") == D("1")
        assert parts.ledger.thread_cost(rec.id) == 0
        ran = {t.task_id: t.finished_at for t in parts.store.get_thread(rec.id).tasks}
        billing.down = False
        conductor._run_guarded(rec.id)  # noqa: SLF001 - the next sweep settles, then records
        done = parts.store.get_thread(rec.id)
        assert done.status == "done"
        assert {t.task_id: t.finished_at for t in done.tasks} == ran  # nothing ran again
        charged = parts.ledger.thread_cost(rec.id)
        assert charged > 0 and parts.ledger.held("acme") == D("0")
        assert parts.ledger.balance("acme") == D("10") - charged
    finally:
        billing.close()


def test_an_ended_threads_hold_is_swept_at_once(parts, billing):
    rec = parts.accept("k-ended")  # ended without its release (an API cancel met an outage)
    parts.store.request_cancel(rec.id)
    parts.store.mark_canceled(rec.id)
    assert parts.ledger.held("acme") == D("1")
    assert parts.conductor(billing).sweep_holds() == 1  # an ended thread's hold: any age
    assert parts.ledger.held("acme") == D("0") and parts.ledger.balance("acme") == D("10")


def test_the_sweeper_gives_back_orphans_and_keeps_young_holds(parts, billing):
    parts.ledger.reserve("acme", "orphan", D("2"))  # the ingress died before recording
    parts.now[0] += 121
    parts.ledger.reserve("acme", "young", D("3"))  # the ingress is recording it right now
    conductor = parts.conductor(billing, hold_sweep_seconds=0.05,
                                hold_grace_seconds=120)
    conductor.start_sweeping()
    try:
        deadline = time.monotonic() + 10
        while parts.ledger.hold_keys() != ["young"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert parts.ledger.hold_keys() == ["young"]
        assert parts.ledger.held("acme") == D("3")
    finally:
        conductor.close()
