"""A collector pass while a thread waits to be resumed after a crash, and one while the
resumed thread runs, on SQLite and PostgreSQL: they take nothing the thread needs, and the
resumed thread skips every task whose checkpoint is still stored, and runs again one whose
checkpoint went."""

from __future__ import annotations

import pytest
from support.images import encode, photo

from tilemore.blobs.local import LocalBlobStore
from tilemore.catalog import Catalog
from tilemore.engine import LocalBackend
from tilemore.errors import ServiceUnavailable
from tilemore.lifecycle import Collector, Lifecycle
from tilemore.service.conductor import Conductor
from tilemore.service.events import Listener, TaskFinished, TasksStarted
from tilemore.store import NewThread
from tilemore.store.lifecycle import open_lifecycle_store


class DiesAfterShifter(Listener):
    """The service going down once shifter is recorded, before the encoder's end (a required
    listener that fails stops the run; the thread stays processing, as after a crash)."""

    required = True

    def task_finished(self, event: TaskFinished) -> None:
        if event.stats.task_id == "shifter":
            raise ServiceUnavailable("the conductor's node is gone")


def crashed_after_decode(backend):
    settings = backend.settings(checkpoint_tasks=True, checkpoint_policy="always",
                                blob_grace_seconds=0)
    store = backend.store()
    store.create_domain("acme")
    blobs = LocalBlobStore(settings.blob_path)
    catalog = Catalog.load(settings)
    lifecycle = Lifecycle(backend._keep(open_lifecycle_store(settings.db)), blobs,  # noqa: SLF001
                          settings.retention)
    image = encode(photo(64, 48), "PNG")
    key = blobs.put(image, "input")
    rec, _ = store.create_thread(NewThread(
        domain="acme", account="acme", idem_key="resume", pipeline="thumbnail",
        fingerprint=catalog.pipeline("thumbnail").fingerprint, meta_parts=[],
        image_sha256=key, input_key=key, output_format="png",
        envelope={"adjustments": {"shifter": {"resize": {"width": 32}}}},
        tasks=[("decode", "decode"), ("shifter", "shifter"), ("encoder", "encoder")]))
    lifecycle.refer(rec.id, "acme", "input", key, len(image))
    backend_ = LocalBackend(settings)
    first = Conductor(store, blobs, catalog, backend_, lifecycle=lifecycle,
                      listeners=[DiesAfterShifter()])
    with pytest.raises(ServiceUnavailable):
        first.run_thread(rec.id)
    first.close()
    backend_.close()
    crashed = store.get_thread(rec.id)
    assert crashed.status == "processing"
    decode = crashed.tasks[0]
    assert decode.status == "done" and blobs.exists(decode.checkpoint_key)
    assert crashed.tasks[1].status == "done" and crashed.tasks[2].status != "done"
    with store._tx() as db:  # noqa: SLF001 - its lease ran out: another conductor may take it
        db.execute("UPDATE threads SET lease_until = NULL, lease_owner = NULL WHERE id = ?",
                   (rec.id,))
    return settings, store, blobs, catalog, lifecycle, rec, decode


def test_a_collector_pass_during_a_resume_takes_nothing_it_needs(backend):
    settings, store, blobs, catalog, lifecycle, rec, decode = crashed_after_decode(backend)
    report = Collector(lifecycle).run_pass()  # no grace at all in these settings
    assert report.blobs == {} and report.records == 0
    assert blobs.exists(rec.input_key) and blobs.exists(decode.checkpoint_key)

    ran = resume(settings, store, blobs, catalog, lifecycle, rec.id)
    assert ran == {"encoder"}  # decode and shifter skipped from their checkpoints
    assert store.get_thread(rec.id).tasks[0] == decode
    assert not blobs.exists(decode.checkpoint_key)  # done now: checkpoints go


class CollectsWhenEncoderStarts(Listener):
    """A collector pass, with no grace at all, in the middle of the resumed run: the
    encoder has started, reading the checkpoints the resume skipped to."""

    def __init__(self, collector: Collector) -> None:
        self.collector, self.reports = collector, []

    def tasks_started(self, event: TasksStarted) -> None:
        if any(t.id == "encoder" for t in event.tasks):
            self.reports.append(self.collector.run_pass())


def test_a_collector_pass_while_the_resumed_thread_runs(backend):
    settings, store, blobs, catalog, lifecycle, rec, decode = crashed_after_decode(backend)
    shifter = store.get_thread(rec.id).tasks[1]
    # beside it, another thread's expired input: the pass has work to do
    other = blobs.put(b"another thread's input, long expired", "input")
    lifecycle.pin(other, "input", 37)
    with lifecycle.store._tx() as db:  # noqa: SLF001 - pinned long ago, referenced by none
        db.execute("UPDATE blobs SET touched_at = touched_at - 1e6 WHERE key = ?", (other,))
    spy = CollectsWhenEncoderStarts(Collector(lifecycle))
    ran = resume(settings, store, blobs, catalog, lifecycle, rec.id, [spy])
    assert ran == {"encoder"}  # decode and shifter still skipped from their checkpoints
    [report] = spy.reports
    assert report.blobs == {"input": [1, 37]} and not blobs.exists(other)
    done = store.get_thread(rec.id)
    assert done.status == "done" and done.tasks[:2] == [decode, shifter]
    assert blobs.exists(rec.input_key) and blobs.exists(done.result.key)


def test_a_resumed_thread_runs_again_a_task_whose_checkpoint_went(backend):
    settings, store, blobs, catalog, lifecycle, rec, decode = crashed_after_decode(backend)
    shifter = store.get_thread(rec.id).tasks[1]
    blobs.delete([shifter.checkpoint_key])  # lost with a store, or removed by hand
    assert resume(settings, store, blobs, catalog, lifecycle, rec.id) == {"shifter", "encoder"}


def resume(settings, store, blobs, catalog, lifecycle, thread_id: str,
           listeners=()) -> set[str]:
    """Run the thread on a new conductor; the operators it needed."""
    backend = LocalBackend(settings)
    conductor = Conductor(store, blobs, catalog, backend, lifecycle=lifecycle,
                          listeners=list(listeners))
    try:
        assert conductor.run_thread(thread_id) == "done"
        return {op.name for op in backend._hosts}  # noqa: SLF001 - which replicas ran
    finally:
        conductor.close()
        backend.close()
