"""The registry's guarantees, and a conductor picking up threads another one left — on
SQLite and on PostgreSQL (the ``backend`` fixture runs each test on both)."""

from __future__ import annotations

import threading

import pytest
from support.images import encode, photo
from support.thread_records import died_after_decode, new_thread, service_parts, stored_thread

from tilemore.blobs.local import LocalBlobStore
from tilemore.catalog import Catalog
from tilemore.engine import LocalBackend
from tilemore.service.conductor import Conductor
from tilemore.store import NewThread


def test_uniqueness_is_the_database_s_across_connections(backend):
    """Eight 'replicas' (own connections) race to insert one key: one thread exists."""
    backend.store().create_domain("acme")
    stores = [backend.store() for _ in range(8)]
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(len(stores))

    def race(store) -> None:
        barrier.wait()
        rec, created = store.create_thread(new_thread())
        results.append((rec.id, created))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({tid for tid, _ in results}) == 1
    rec = stores[0].get_thread_by_key("k1")
    assert [t.status for t in rec.tasks] == ["pending"] * 3  # written with the thread


def test_a_failed_insert_leaves_nothing_behind(backend):
    store = backend.store()
    store.create_domain("acme")
    bad = new_thread("k2")
    bad.tasks.append(("decode", "decode"))  # duplicate task id: the task insert fails
    with pytest.raises(backend.integrity_error, match="(?i)unique"):
        store.create_thread(bad)
    assert store.get_thread_by_key("k2") is None  # the thread row was rolled back too


def test_finished_threads_do_not_change_state(backend):
    store = backend.store()
    store.create_domain("acme")
    rec, _ = store.create_thread(new_thread("k3"))
    store.mark_canceled(rec.id)
    store.fail_thread(rec.id, "x", "late failure")
    after = store.get_thread(rec.id)
    assert after.status == "canceled" and after.error_code is None


def test_a_new_conductor_resumes_and_skips_finished_tasks(backend):
    settings = backend.settings(checkpoint_tasks=True, checkpoint_policy="always")
    store = backend.store()
    store.create_domain("acme")
    blobs = LocalBlobStore(settings.blob_path)
    catalog = Catalog.load(settings)
    pipeline = catalog.pipeline("thumbnail")
    image_key = blobs.put(encode(photo(64, 48), "PNG"))
    rec, _ = store.create_thread(NewThread(
        domain="acme", account="acme", idem_key="resume", pipeline="thumbnail",
        fingerprint=pipeline.fingerprint, meta_parts=[], image_sha256=image_key,
        input_key=image_key, output_format="png",
        envelope={"adjustments": {"shifter": {"resize": {"width": 32}}}},
        tasks=[("decode", "decode"), ("shifter", "shifter"), ("encoder", "encoder")]))

    first = LocalBackend(settings)
    Conductor(store, blobs, catalog, first).run_thread(rec.id)
    done = store.get_thread(rec.id)
    assert done.status == "done"
    died_after_decode(store, rec.id)
    decode_before = store.get_thread(rec.id).tasks[0]

    assert store.unfinished_threads() == [rec.id]
    second = LocalBackend(settings)
    assert Conductor(store, blobs, catalog, second).run_thread(rec.id) == "done"
    resumed = store.get_thread(rec.id)
    assert resumed.status == "done" and store.unfinished_threads() == []
    assert resumed.tasks[0] == decode_before  # not run again: same times, same checkpoint
    assert resumed.result.sha256 == done.result.sha256  # and the same bytes as before
    ran = {op.name for op in second._hosts}  # noqa: SLF001 - which replicas were needed
    assert ran == {"shifter", "encoder"}


def test_a_resumed_thread_runs_again_what_was_too_cheap_to_store(backend):
    """The default policy: no task here ran longer than a put would take (1 s, as set), so
    none kept a checkpoint, and the decode that finished before the crash runs again for the
    shifter that reads it. The result is the same."""
    settings = backend.settings(checkpoint_tasks=True, checkpoint_put_seconds=1)
    store = backend.store()
    store.create_domain("acme")
    blobs = LocalBlobStore(settings.blob_path)
    catalog = Catalog.load(settings)
    rec = stored_thread(store, blobs, catalog.pipeline("thumbnail").fingerprint)
    assert Conductor(store, blobs, catalog, LocalBackend(settings)).run_thread(rec.id) == "done"
    done = store.get_thread(rec.id)
    assert [t.checkpoint_key for t in done.tasks] == [None, None, None]
    died_after_decode(store, rec.id)

    second = LocalBackend(settings)
    assert Conductor(store, blobs, catalog, second).run_thread(rec.id) == "done"
    resumed = store.get_thread(rec.id)
    assert resumed.result.sha256 == done.result.sha256
    assert resumed.tasks[0].started_at > done.tasks[0].started_at  # decode ran again
    ran = {op.name for op in second._hosts}  # noqa: SLF001 - which replicas were needed
    assert ran == {"decode", "shifter", "encoder"}


def test_a_thread_whose_pipeline_changed_fails_instead_of_mixing_versions(backend):
    settings, store, blobs, catalog = service_parts(backend)
    rec = stored_thread(store, blobs, fingerprint="from-an-older-deploy")
    assert Conductor(store, blobs, catalog, LocalBackend(settings)).run_thread(rec.id) == "failed"
    assert store.get_thread(rec.id).error_code == "pipeline_changed"


def test_a_thread_that_keeps_breaking_the_conductor_fails_after_three_attempts(backend):
    settings, store, blobs, catalog = service_parts(backend)

    class Broken(LocalBackend):
        def put(self, value):
            raise ConnectionError("the cluster is gone")

    rec = stored_thread(store, blobs, catalog.pipeline("thumbnail").fingerprint)
    conductor = Conductor(store, blobs, catalog, Broken(settings))
    for attempt in range(3):
        assert store.get_thread(rec.id).status == "processing", attempt
        conductor._run_guarded(rec.id)  # noqa: SLF001 - what a sweep runs
    failed = store.get_thread(rec.id)
    assert failed.status == "failed" and failed.error_code == "internal_error"
    assert "the cluster is gone" in failed.error_message


def test_a_thread_finishes_on_the_pipeline_version_it_was_accepted_under(backend, tmp_path):
    settings = backend.settings(checkpoint_tasks=True)
    store = backend.store()
    store.create_domain("acme")
    blobs = LocalBlobStore(settings.blob_path)
    path = tmp_path / "versioned.yaml"
    stages = ("stages:\n  - {name: decode, operator: decode}\n"
              "  - {name: shifter, operator: shifter, params: {resize: {width: %d}}}\n"
              "  - {name: encoder, operator: encoder, params: {format: png}}\n")
    path.write_text("pipeline: versioned\nversion: '1'\n" + stages % 16)
    v1 = Catalog.load(settings, extra=[path])
    Conductor(store, blobs, v1, LocalBackend(settings))  # v1 deployed: its definition kept
    image_key = blobs.put(encode(photo(64, 48), "PNG"))
    rec, _ = store.create_thread(NewThread(
        domain="acme", account="acme", idem_key="v1", pipeline="versioned",
        fingerprint=v1.pipeline("versioned").fingerprint, meta_parts=[],
        image_sha256=image_key, input_key=image_key, output_format="png",
        envelope={"adjustments": {}},
        tasks=[("decode", "decode"), ("shifter", "shifter"), ("encoder", "encoder")]))

    path.write_text("pipeline: versioned\nversion: '2'\n" + stages % 24)  # a deploy
    v2 = Catalog.load(settings, extra=[path])
    assert v2.pipeline("versioned").fingerprint != rec.fingerprint
    assert Conductor(store, blobs, v2, LocalBackend(settings)).run_thread(rec.id) == "done"
    assert store.get_thread(rec.id).result.width == 16  # v1's definition, not v2's
