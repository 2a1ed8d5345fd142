"""Conductors sharing threads, in one process on a real SQLite file: a conductor paused past
its lease has its late writes refused while another finishes the thread (charged once); a
10,000-thread backlog of one domain neither starves another domain nor fills memory;
admission refuses work past the backlog bound."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from support.images import encode, noisy, photo
from support.pipelines import one_stage
from support.service_harness import Service

from tilemore.billing.ledger import Entry, open_ledger
from tilemore.billing.service import Billing
from tilemore.blobs import open_blob_store
from tilemore.catalog import Catalog
from tilemore.engine import LocalBackend
from tilemore.service.conductor import Conductor
from tilemore.settings import Settings
from tilemore.store import NewThread, open_store

DATA = Path(__file__).parents[1] / "data"
TASKS = [("decode", "decode"), ("first", "spin"), ("second", "spin"), ("encoder", "encoder")]


def parts(tmp_path):
    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True,
                        pipeline_paths=[DATA / "slow.yaml"])
    store, ledger = open_store(settings.db), open_ledger(settings.db)
    store.create_domain("acme")
    store.create_domain("rival")
    ledger.append([Entry("acme", "order", Decimal("100"), reference="o")])
    return settings, store, ledger, open_blob_store(settings.blobs), Catalog.load(settings)


def test_a_paused_conductors_late_writes_are_refused(tmp_path):
    settings, store, ledger, blobs, catalog = parts(tmp_path)
    key = blobs.put(encode(noisy(photo(48, 32), 10, seed=1), "PNG"))
    rec, _ = store.create_thread(NewThread(
        domain="acme", account="acme", idem_key="k", pipeline="slow",
        fingerprint=catalog.pipeline("slow").fingerprint, meta_parts=[], image_sha256=key,
        input_key=key, output_format="png", envelope={"adjustments": {}}, tasks=TASKS))
    billing = Billing(ledger)

    def conductor(name: str) -> Conductor:
        return Conductor(store, blobs, catalog, LocalBackend(settings), billing=billing,
                         name=name, lease_seconds=0.6)

    paused, other = conductor("paused"), conductor("other")
    assert paused.submit(rec.id)  # its lease is never renewed: as if the process froze
    time.sleep(0.8)  # mid-way through its first 1 s task, the lease runs out
    assert other.run_thread(rec.id) == "done"
    deadline = time.monotonic() + 10
    while paused.active():  # the paused one wakes, finishes its task, and is refused
        assert time.monotonic() < deadline
        time.sleep(0.05)
    done = store.get_thread(rec.id)
    assert done.status == "done" and all(t.status == "done" for t in done.tasks)
    charges = sorted(e["task_id"] for e in ledger.entries("acme") if e["kind"] == "charge")
    assert charges == sorted(t for t, _ in TASKS)  # each task once
    for c in (paused, other):
        c.close()
    billing.close()


def test_a_huge_backlog_of_one_domain_does_not_starve_another(tmp_path):
    settings, store, _, blobs, catalog = parts(tmp_path)
    now = time.time()
    with store._tx() as db:  # noqa: SLF001 - 10,000 queued threads, written at once
        db.executemany(
            "INSERT INTO threads (id, domain, account, idem_key, status, pipeline, fingerprint,"
            " meta_parts, image_sha256, input_key, output_format, envelope, created_at,"
            " updated_at) VALUES (?, 'acme', 'acme', ?, 'processing', 'slow', 'f', '[]', ?, ?,"
            " 'png', '{}', ?, ?)",
            [(f"a{i:05}", f"a{i}", "0" * 64, "0" * 64, now + i * 1e-3, now)
             for i in range(10_000)])
    key = blobs.put(encode(photo(32, 24), "PNG"))
    late, _ = store.create_thread(NewThread(
        domain="rival", account="rival", idem_key="late", pipeline="slow",
        fingerprint=catalog.pipeline("slow").fingerprint, meta_parts=[], image_sha256=key,
        input_key=key, output_format="png", envelope={"adjustments": {}}, tasks=TASKS))

    conductor = Conductor(store, blobs, catalog, LocalBackend(settings), concurrency=4,
                          name="c", lease_seconds=30)
    try:
        started = time.monotonic()
        assert conductor.claim() == 4  # no more than it has room for: memory stays bounded
        assert time.monotonic() - started < 2  # one query over the backlog, not 10,000
        held = store._query("SELECT id FROM threads WHERE lease_owner = 'c'")  # noqa: SLF001
        assert late.id in {r["id"] for r in held}  # the other domain's thread goes first
        assert conductor.active() <= 4
    finally:
        conductor.close()


def test_work_past_the_backlog_bound_is_refused_with_503(tmp_path):
    one_stage(tmp_path, "nap", "nap", ", params: {seconds: 4}")  # waits without the GIL
    svc = Service(tmp_path / "svc", max_backlog=2, pipeline_paths=[tmp_path / "t.yaml"])
    try:
        env = {"adjustments": {}, "pipeline": "t"}
        for i in range(2):
            assert svc.submit(encode(photo(32, 24 + i), "PNG"), env).status == 202
        time.sleep(1.1)  # the admission count is at most a second old
        got = svc.submit(encode(photo(32, 30), "PNG"), env)
        assert (got.status, got.code) == (503, "backlog_full")
        assert got.headers["retry-after"] == "5"
        assert svc.billing.balance("acme").held > 0  # only the two accepted hold credits
    finally:
        svc.close()
