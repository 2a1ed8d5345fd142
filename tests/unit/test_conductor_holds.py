"""The conductor gives back a thread's hold on every way it ends — given up on, its input
lost, its release refused by a database outage — and sweeps holds no thread owns. A real
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


def test_a_release_refused_by_an_outage_is_retried_by_the_sweep(parts):
    class Outage(Billing):
        """The database goes away just as the thread ends, and comes back."""

        def __init__(self, ledger) -> None:
            super().__init__(ledger)
            self.down = True

        def release(self, key: str) -> None:
            self._check()
            super().release(key)

        def sweep_holds(self, *args) -> int:
            self._check()
            return super().sweep_holds(*args)

        def _check(self) -> None:
            if self.down:
                raise DatabaseUnavailable("PostgreSQL at db:5432/tilemore is unavailable")

    billing = Outage(parts.ledger)
    try:
        rec = parts.accept("k-outage")
        conductor = parts.conductor(billing)
        assert conductor.run_thread(rec.id) == "done"  # the thread ends whatever happens
        charged = parts.ledger.thread_cost(rec.id)
        assert parts.ledger.held("acme") == D("1") - charged  # left over, not released
        with pytest.raises(DatabaseUnavailable):  # still down (the sweeper logs it)
            conductor.sweep_holds()
        billing.down = False
        assert conductor.sweep_holds() == 1  # an ended thread's hold: at once, any age
        assert parts.ledger.held("acme") == D("0")
        assert parts.ledger.balance("acme") == D("10") - charged
    finally:
        billing.close()


def test_the_sweeper_gives_back_orphans_and_keeps_young_holds(parts, billing):
    parts.ledger.reserve("acme", "orphan", D("2"))  # the ingress died before recording
    parts.now[0] += 121
    parts.ledger.reserve("acme", "young", D("3"))  # the ingress is recording it right now
    conductor = parts.conductor(billing, sweep_seconds=0.05, hold_sweep_seconds=0.05,
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
