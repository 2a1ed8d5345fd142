"""Credit holds are never leaked: the sweep gives back what no running work owns, and
nothing else — on SQLite and on PostgreSQL (holds and threads share one database)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tilemore.billing import Entry
from tilemore.store import NewThread

D = Decimal
GRACE, BATCH_GRACE = 120.0, 3600.0


@pytest.fixture
def db(backend):
    now = [1_000_000.0]
    store = backend.store()
    store.create_domain("acme")
    ledger = backend.ledger(clock=lambda: now[0])
    ledger.append([Entry("acme", "order", D("100"), reference="o")])
    return store, ledger, now


def thread(store, key: str):
    rec, _ = store.create_thread(NewThread(
        domain="acme", account="acme", idem_key=key, pipeline="thumbnail", fingerprint="f",
        meta_parts=[], image_sha256="0" * 64, input_key="0" * 64, output_format="png",
        envelope={"adjustments": {}}, tasks=[("decode", "decode")]))
    return rec


def sweep(ledger, limit: int = 500) -> int:
    return ledger.sweep_holds(GRACE, BATCH_GRACE, limit)


def test_the_sweep_gives_back_only_what_no_running_work_owns(db):
    store, ledger, now = db
    ledger.reserve("acme", "orphan", D("1"))  # the ingress died before recording its thread
    now[0] += 60
    for key in ("young-orphan", "running", "ended"):
        ledger.reserve("acme", key, D("1"))
    ledger.reserve("acme", "batch", D("1"), kind="batch")
    thread(store, "running")
    store.fail_thread(thread(store, "ended").id, "x", "its release met an outage")
    assert sweep(ledger) == 1  # the ended thread's: at once, whatever its age
    assert set(ledger.hold_keys()) == {"orphan", "young-orphan", "running", "batch"}

    now[0] += GRACE - 30  # past the grace for "orphan", not for "young-orphan"
    assert sweep(ledger) == 1
    assert set(ledger.hold_keys()) == {"young-orphan", "running", "batch"}
    now[0] += 31
    assert sweep(ledger) == 1 and set(ledger.hold_keys()) == {"running", "batch"}
    now[0] += BATCH_GRACE  # a batch that died; a running thread keeps its hold however old
    assert sweep(ledger) == 1 and set(ledger.hold_keys()) == {"running"}
    assert ledger.held("acme") == D("1")


def test_a_young_hold_is_kept_while_the_ingress_records_its_thread(db):
    store, ledger, now = db
    ledger.reserve("acme", "k", D("1"))
    now[0] += GRACE - 1
    assert sweep(ledger) == 0 and set(ledger.hold_keys()) == {"k"}
    thread(store, "k")  # recorded within the grace: the hold is the thread's from now on
    now[0] += 10 * GRACE
    assert sweep(ledger) == 0 and ledger.held("acme") == D("1")


def test_a_sweep_is_bounded(db):
    _, ledger, now = db
    for i in range(7):
        ledger.reserve("acme", f"k{i}", D("1"))
    now[0] += GRACE + 1
    assert [sweep(ledger, limit=3) for _ in range(4)] == [3, 3, 1, 0]
    assert ledger.held("acme") == D("0")


def test_a_database_from_before_gets_the_hold_kind(backend):
    """Holds of a database made before the column existed are thread holds."""
    backend.execute("CREATE TABLE holds (key TEXT PRIMARY KEY, account TEXT NOT NULL,"
                    " remaining TEXT NOT NULL, created_at REAL NOT NULL)")
    backend.execute("INSERT INTO holds VALUES ('old', 'acme', '1', 0)")
    backend.store()
    ledger = backend.ledger()
    assert ledger.held("acme") == D("1")
    assert sweep(ledger) == 1 and ledger.hold_keys() == []
    ledger.reserve("acme", "new", D("0"), kind="batch")
    assert set(ledger.hold_keys()) == {"new"}
