"""References, expiry and collection, on SQLite and PostgreSQL (the ``backend`` fixture), with
real files: the rules, the put/delete race, and the issue's bad cases."""

from __future__ import annotations

import threading
import time

import pytest

from tilemore.blobs import blob_key
from tilemore.blobs.local import LocalBlobStore
from tilemore.lifecycle import Collector, Lifecycle
from tilemore.store import NewThread, ResultInfo
from tilemore.store.lifecycle import open_lifecycle_store


class World:
    """A thread store, its lifecycle and a local blob store, on one backend."""

    def __init__(self, backend, **settings) -> None:
        self.settings = backend.settings(blob_grace_seconds=0, **settings)
        self.threads = backend.store()
        self.threads.create_domain("acme")
        self.store = backend._keep(open_lifecycle_store(self.settings.db))  # noqa: SLF001
        self.blobs = LocalBlobStore(self.settings.blob_path)
        self.lifecycle = Lifecycle(self.store, self.blobs, self.settings.retention)
        self.collector = Collector(self.lifecycle)

    def put(self, data: bytes, kind: str) -> str:
        key = blob_key(data)
        self.lifecycle.pin(key, kind, len(data))
        self.blobs.put(data, kind)
        return key

    def thread(self, name: str, input_key: str) -> str:
        rec, _ = self.threads.create_thread(NewThread(
            domain="acme", account="acme", idem_key=name, pipeline="thumbnail",
            fingerprint="f", meta_parts=[], image_sha256=input_key, input_key=input_key,
            output_format="png", envelope={"adjustments": {}},
            tasks=[("decode", "decode"), ("encoder", "encoder")]))
        self.lifecycle.refer(rec.id, "acme", "input", input_key)
        return rec.id

    def finish(self, thread_id: str, result: bytes) -> str:
        key = self.put(result, "result")
        self.lifecycle.refer(thread_id, "acme", "result", key, len(result))
        self.threads.finish_thread(thread_id, ResultInfo(key, key, len(result), "image/png",
                                                         1, 1))
        self.lifecycle.thread_ended(thread_id, "acme", "done")
        return key

    def age(self, seconds: float) -> None:
        """Every date moves back: time passing, on the database's clock."""
        with self.store._tx() as db:  # noqa: SLF001
            for table, column in (("thread_expiry", "result_until"),
                                  ("thread_expiry", "input_until"),
                                  ("thread_expiry", "retry_until"),
                                  ("thread_expiry", "record_until"),
                                  ("blob_refs", "expires_at"), ("blobs", "touched_at")):
                db.execute(f"UPDATE {table} SET {column} = {column} - ?", (seconds,))


def test_checkpoints_go_when_done_and_the_rest_when_it_expires(backend):
    w = World(backend)
    inp = w.put(b"input image", "input")
    tid = w.thread("t1", inp)
    ck = w.put(b"a checkpoint", "checkpoint")
    w.lifecycle.refer(tid, "acme", "checkpoint", ck, 12)
    assert w.collector.run_pass().blobs == {}  # everything in use
    res = w.finish(tid, b"the result")
    assert not w.blobs.exists(ck)  # at the thread's end
    assert w.blobs.exists(inp) and w.blobs.exists(res)
    dry = w.collector.run_pass(dry_run=True)
    assert dry.blobs == {} and dry.records == 0
    w.age(w.settings.retention_results_seconds + 1)
    report = w.collector.run_pass()
    assert set(report.blobs) == {"input", "result"}
    assert not w.blobs.exists(inp) and not w.blobs.exists(res)
    assert w.threads.get_thread(tid) is not None  # the record lives longer
    w.age(w.settings.retention_records_seconds)
    assert w.collector.run_pass().records == 1
    assert w.threads.get_thread(tid) is None and w.store.refs(tid) == []


def test_two_threads_share_an_input_and_one_expires_while_the_other_runs(backend):
    w = World(backend)
    inp = w.put(b"shared input", "input")
    first, second = w.thread("a", inp), w.thread("b", inp)
    w.finish(first, b"result a")
    w.age(w.settings.retention_records_seconds + 10)  # the first's record expired
    report = w.collector.run_pass()
    assert report.records == 1 and w.threads.get_thread(first) is None
    assert w.blobs.exists(inp)  # the second still runs on it
    w.finish(second, b"result b")
    w.age(w.settings.retention_inputs_seconds + 1)
    w.collector.run_pass()
    assert not w.blobs.exists(inp)


def test_a_pin_during_a_collection_keeps_the_blob(backend):
    """The put/delete race: the collector has chosen a blob and holds its row; a writer that
    pins it then waits, and its put after the pin stores the bytes again."""
    w = World(backend)
    key = w.put(b"about to be collected", "input")
    wrote = threading.Event()

    def writer() -> None:
        w.lifecycle.pin(key, "input", 21)  # waits for the collector's transaction
        w.blobs.put(b"about to be collected", "input")
        wrote.set()

    def remove(chosen):
        threading.Thread(target=writer, daemon=True).start()
        time.sleep(0.3)  # the writer is now waiting on the row
        return w.blobs.delete([b.key for b in chosen])

    removed, _ = w.store.collect_blobs(remove, 10, 0, 0)
    assert [b.key for b in removed] == [key]
    assert wrote.wait(10)
    assert w.blobs.exists(key)  # put again after the pin
    # and known again, pinned now: a collector with a grace leaves it to be referenced
    assert w.store.collect_blobs(w.blobs.delete, 10, 60, 60) == ([], [])


def test_a_collector_killed_mid_batch_is_finished_by_the_next_pass(backend):
    w = World(backend)
    keys = [w.put(f"orphan {i}".encode(), "checkpoint") for i in range(6)]

    def killed(chosen):
        w.blobs.delete([b.key for b in chosen[:3]])  # half removed, then the process dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        w.store.collect_blobs(killed, 10, 0, 0)
    assert sum(w.blobs.exists(k) for k in keys) == 3  # rows kept: nothing forgotten
    report = w.collector.run_pass()
    assert report.blobs["checkpoint"][0] == 6  # the three already gone count as removed
    assert not any(w.blobs.exists(k) for k in keys)
    assert w.store.stored_bytes() == {}


def test_a_store_that_refuses_deletes_keeps_the_row_for_a_later_pass(backend):
    w = World(backend)
    ok = w.put(b"removable", "checkpoint")
    stuck = blob_key(b"stuck")
    w.lifecycle.pin(stuck, "checkpoint", 5)
    (w.settings.blob_path / stuck[:2] / stuck).mkdir(parents=True)  # unlink refuses it
    report = w.collector.run_pass()
    assert report.kept == 1 and report.blobs["checkpoint"][0] == 1
    assert not w.blobs.exists(ok)
    assert w.store.stored_bytes() == {"checkpoint": 5}  # still known, tried again later
    (w.settings.blob_path / stuck[:2] / stuck).rmdir()
    assert w.collector.run_pass().blobs["checkpoint"][0] == 1
    assert w.store.stored_bytes() == {}


def test_the_database_clock_decides_not_the_process_clock(backend, monkeypatch):
    """A node whose clock runs a month ahead removes nothing early."""
    w = World(backend)
    inp = w.put(b"input", "input")
    tid = w.thread("t", inp)
    res = w.finish(tid, b"result")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 40 * 86400)
    report = w.collector.run_pass()
    assert report.records == 0 and report.blobs == {}
    assert w.blobs.exists(inp) and w.blobs.exists(res)
    assert not w.store.expiry(tid).result_expired


def test_usage_and_expired_records_in_batches(backend):
    w = World(backend, gc_batch=50)
    inp = w.put(b"x" * 100, "input")
    ids = [w.thread(f"t{i}", inp) for i in range(120)]
    for tid in ids[:3]:
        w.finish(tid, f"result {tid}".encode())
    usage = w.store.usage("acme")
    assert usage[0]["threads"] == 120
    assert usage[0]["blobs"]["input"] == {"count": 1, "bytes": 100}
    assert usage[0]["blobs"]["result"]["count"] == 3
    for tid in ids[3:]:
        w.threads.fail_thread(tid, "x", "failed")
        w.lifecycle.thread_ended(tid, "acme", "failed")
    w.age(w.settings.retention_records_seconds + w.settings.retry_window_seconds + 1)
    report = w.collector.run_pass()
    assert report.records == 120 and report.blobs["input"] == [1, 100]
    assert w.store.usage("acme") == []


def test_threads_that_ended_before_lifecycles_are_dated_by_the_collector(backend):
    w = World(backend)
    key = w.put(b"old input", "input")
    rec, _ = w.threads.create_thread(NewThread(
        domain="acme", account="acme", idem_key="old", pipeline="thumbnail", fingerprint="f",
        meta_parts=[], image_sha256=key, input_key=key, output_format="png",
        envelope={"adjustments": {}}, tasks=[("decode", "decode")]))
    w.threads.fail_thread(rec.id, "x", "failed")  # no listener: an older release
    report = w.collector.run_pass()
    assert report.dated == 1 and w.blobs.exists(key)
    assert w.store.expiry(rec.id).retry_until is not None
    assert ("input", key) in {(k, v) for k, v, _ in w.store.refs(rec.id)}


def test_the_orphan_sweep_removes_only_old_blobs_no_record_knows(backend):
    import os

    w = World(backend)
    inp = w.put(b"an input", "input")
    w.thread("t", inp)
    orphan = w.blobs.put(b"left by a writer that died before its record")
    young = w.blobs.put(b"written a moment ago, its record still coming")
    old = time.time() - 3 * 86400
    for key in (inp, orphan):
        os.utime(w.settings.blob_path / key[:2] / key, (old, old))
    dry = w.collector.sweep_orphans(86400, dry_run=True)
    assert dry.blobs == {"orphan": [1, 44]} and w.blobs.exists(orphan)
    report = w.collector.sweep_orphans(86400)
    assert report.blobs == {"orphan": [1, 44]}
    assert not w.blobs.exists(orphan)
    assert w.blobs.exists(inp) and w.blobs.exists(young)


def test_indexed_errors_expire_and_go_with_their_domain(backend):
    from tilemore.store import ErrorRecord

    w = World(backend)
    index = backend.errors()
    for i, (domain, age) in enumerate((("acme", 40 * 86400), ("acme", 0), ("rival", 0))):
        index.record_error(ErrorRecord(domain, domain, f"t{i}", "boom", "explode",
                                       "ZeroDivisionError", f"division {i}", "Traceback…",
                                       1, True, time.time() - age))
    assert w.collector.run_pass().errors == 1  # older than the errors' 30 days
    left = index.search_errors("division", domain=None)
    assert sorted(h.record.thread_id for h in left) == ["t1", "t2"]
    w.threads.create_domain("rival")
    assert w.collector.run_pass(domain="rival").errors == 1
    assert [h.record.thread_id for h in index.search_errors("division", domain=None)] == ["t1"]


def test_a_node_whose_clock_runs_behind_still_removes_on_time(backend, monkeypatch):
    """The other way round: a node a month behind the database and the disk. The database
    decides what expired; the files' times are compared with the disk's clock, not the
    node's, so the delete's guard (a file written since) does not keep everything."""
    w = World(backend)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 40 * 86400)
    inp = w.put(b"input", "input")
    tid = w.thread("t", inp)
    ck = w.put(b"its checkpoint", "checkpoint")
    w.lifecycle.refer(tid, "acme", "checkpoint", ck, 14)
    res = w.finish(tid, b"result")
    assert not w.blobs.exists(ck)  # at the thread's end, as on any node
    assert w.collector.run_pass().blobs == {}  # nothing else yet: the database's clock
    w.age(w.settings.retention_results_seconds + 1)
    report = w.collector.run_pass()
    assert set(report.blobs) == {"input", "result"} and report.kept == 0
    assert not w.blobs.exists(inp) and not w.blobs.exists(res)


def test_the_orphan_sweep_reads_the_store_s_clock_not_the_node_s(backend, monkeypatch):
    """A node two days ahead: a blob written a moment ago (its record still coming) is young
    by the store's clock, and stays; one written three days ago goes."""
    import os

    w = World(backend)
    young = w.blobs.put(b"written a moment ago")
    old = w.blobs.put(b"written three days ago, no record")
    then = time.time() - 3 * 86400
    os.utime(w.settings.blob_path / old[:2] / old, (then, then))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2 * 86400)
    report = w.collector.sweep_orphans(86400)
    assert report.blobs == {"orphan": [1, len(b"written three days ago, no record")]}
    assert w.blobs.exists(young) and not w.blobs.exists(old)


def test_a_collector_process_killed_mid_batch_is_finished_by_the_next_pass(backend):
    """For real: a collector process SIGKILLed while it holds a batch's rows, half its files
    unlinked. The database rolls the batch back; a later pass removes the rest."""
    import os
    import signal
    import subprocess
    import sys

    w = World(backend)
    keys, tids = [], []
    for i in range(4):
        inp = w.put(f"input {i}".encode(), "input")
        tids.append(w.thread(f"t{i}", inp))
        keys += [inp, w.finish(tids[-1], f"result {i}".encode())]
    w.age(w.settings.retention_records_seconds + 1)
    stored = w.store.stored_bytes()
    script = (
        "import os, signal\n"
        "from tilemore.blobs.local import LocalBlobStore\n"
        "from tilemore.lifecycle import Collector, Lifecycle\n"
        "from tilemore.settings import Settings\n"
        "from tilemore.store.lifecycle import open_lifecycle_store\n"
        "class Dies(LocalBlobStore):\n"
        "    def delete(self, keys, *, modified_before=None):\n"
        "        super().delete(list(keys)[:len(keys) // 2], modified_before=modified_before)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "s = Settings.from_env()\n"
        "lifecycle = Lifecycle(open_lifecycle_store(s.db), Dies(s.blob_path), s.retention)\n"
        "Collector(lifecycle).run_pass()\n")
    env = {**os.environ, **backend.env, "TILEMORE_BLOB_GRACE_SECONDS": "0",
           "TILEMORE_METRICS": "false"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert sum(w.blobs.exists(k) for k in keys) == 4  # half of the batch unlinked
    assert w.store.stored_bytes() == stored  # and its rows all kept: nothing forgotten
    report = w.collector.run_pass()
    assert sum(c for c, _ in report.blobs.values()) == 8 and report.kept == 0
    assert not any(w.blobs.exists(k) for k in keys) and w.store.stored_bytes() == {}
    assert all(w.threads.get_thread(t) is None for t in tids)


def test_a_canceled_thread_keeps_its_checkpoints_until_its_retry_window_closes(backend):
    w = World(backend)
    inp = w.put(b"input", "input")
    tid = w.thread("t", inp)
    ck = w.put(b"decoded pixels", "checkpoint")
    w.lifecycle.refer(tid, "acme", "checkpoint", ck, 14)
    w.threads.mark_canceled(tid)
    w.lifecycle.thread_ended(tid, "acme", "canceled")
    w.age(w.settings.retry_window_seconds - 60)
    assert w.collector.run_pass().blobs == {} and w.blobs.exists(ck)  # may run again
    w.age(120)
    report = w.collector.run_pass()  # (its input too: kept as long as the window here)
    assert report.blobs["checkpoint"] == [1, 14] and not w.blobs.exists(ck)


def test_errors_and_webhook_deliveries_expire_by_their_domain_s_own_time(backend):
    """``TILEMORE_RETENTION_DOMAINS``' "errors" and "webhooks" keys: a domain with a time of
    its own is expired by it, the others by the default."""
    from tilemore.store import ErrorRecord
    from tilemore.store.webhooks import Outgoing

    w = World(backend, retention_domains={"rival": {"errors": 3600, "webhooks": 86400}})
    w.threads.create_domain("rival")
    index = backend.errors()
    two_hours, two_days = time.time() - 7200, time.time() - 2 * 86400
    for i, (domain, at) in enumerate((("acme", two_hours), ("rival", two_hours),
                                      ("acme", time.time() - 40 * 86400))):
        index.record_error(ErrorRecord(domain, domain, f"t{i}", "boom", "explode",
                                       "ZeroDivisionError", f"division {i}", "Traceback…",
                                       1, True, at))
    for domain in ("acme", "rival"):
        ep = w.threads.create_endpoint(domain, f"https://hooks.example.com/{domain}",
                                       ["thread.done"], None, "whsec_a", most=2)
        w.threads.enqueue([Outgoing(ep.id, domain, f"evt_{domain}", "thread.done", b"{}")],
                          now=two_days)
        [claimed] = w.threads.claim_deliveries("d", 1, 60.0)
        w.threads.record_attempt(claimed, time.time(), 200, None, 0.1, "delivered")
    report = w.collector.run_pass()
    assert report.errors == 2 and report.webhooks == 1
    left = index.search_errors("division", domain=None)
    assert [h.record.thread_id for h in left] == ["t0"]  # acme's, two hours old

    def domains() -> list[str]:
        with w.store._tx() as db:  # noqa: SLF001
            return sorted(r["domain"] for r in db.execute(
                "SELECT domain FROM webhook_deliveries").fetchall())

    assert domains() == ["acme"]
    rival = w.threads.create_endpoint("rival", "https://hooks.example.com/r2", ["thread.done"],
                                      None, "whsec_b", most=2)
    w.threads.enqueue([Outgoing(rival.id, "rival", "evt_new", "thread.done", b"{}")])
    assert domains() == ["acme", "rival"]  # pending: kept by any pass…
    assert w.collector.run_pass().webhooks == 0
    assert w.collector.run_pass(domain="rival").webhooks == 1  # …but not its domain's deletion
    assert domains() == ["acme"]


def test_the_collector_records_bytes_stored_and_collected(backend):
    from tilemore.metrics import MemorySink, Metrics

    w = World(backend)
    sink = MemorySink()
    w.lifecycle.metrics = Metrics(sink)
    inp = w.put(b"i" * 100, "input")
    tid = w.thread("t", inp)
    ck = w.put(b"c" * 40, "checkpoint")
    w.lifecycle.refer(tid, "acme", "checkpoint", ck, 40)
    w.finish(tid, b"r" * 30)
    assert sink.observed("tilemore_blob_collected_bytes_total", kind="checkpoint") == [40]
    w.collector.run_pass()
    assert sink.observed("tilemore_blob_bytes", kind="input")[-1] == 100
    assert sink.observed("tilemore_blob_bytes", kind="result")[-1] == 30
    assert sink.observed("tilemore_blob_bytes", kind="checkpoint")[-1] == 0
    w.age(w.settings.retention_results_seconds + 1)
    w.collector.run_pass()
    assert sink.observed("tilemore_blob_collected_bytes_total", kind="input") == [100]
    assert sink.observed("tilemore_blob_bytes", kind="input")[-1] == 0


def test_the_collector_s_own_thread_removes_what_expired_every_interval(backend):
    """As the conductor runs it (``Collector.start``): nobody calls a pass; the gauges are
    set at once, and what expires is gone within an interval or two."""
    from tilemore.metrics import MemorySink, Metrics

    w = World(backend, gc_interval_seconds=1)
    sink = MemorySink()
    w.lifecycle.metrics = Metrics(sink)
    inp = w.put(b"i" * 64, "input")
    w.finish(w.thread("t", inp), b"r" * 32)
    w.collector.start()
    try:
        deadline = time.monotonic() + 20
        while not sink.observed("tilemore_blob_bytes", kind="input") and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.observed("tilemore_blob_bytes", kind="input")[0] == 64
        w.age(w.settings.retention_results_seconds + 1)
        while w.blobs.exists(inp) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not w.blobs.exists(inp)
    finally:
        w.collector.stop()
        w.collector._thread.join(30)  # noqa: SLF001 - its pass done before the database closes


# -- the lifecycle's writes in the thread record's own transactions -------------------------

def new_thread(name: str, input_key: str) -> NewThread:
    return NewThread(domain="acme", account="acme", idem_key=name, pipeline="thumbnail",
                     fingerprint="f", meta_parts=[], image_sha256=input_key,
                     input_key=input_key, output_format="png", envelope={"adjustments": {}},
                     tasks=[("decode", "decode"), ("encoder", "encoder")])


def test_a_thread_is_created_with_its_inputs_reference_or_not_at_all(backend):
    w = World(backend)
    inp = w.put(b"input image", "input")
    rec, created = w.threads.create_thread(new_thread("t1", inp),
                                           also=w.lifecycle.referring("acme", "input", inp, 11))
    assert created and w.store.refs(rec.id) == [("input", inp, None)]

    def broken(db, thread_id):
        w.lifecycle.referring("acme", "input", inp)(db, thread_id)
        raise RuntimeError("the reference's write failed")

    with pytest.raises(RuntimeError):
        w.threads.create_thread(new_thread("t2", inp), also=broken)
    assert w.threads.get_thread_by_key("t2") is None  # neither the thread nor its reference
    # the same request again: the thread exists, so nothing else is written
    again, created = w.threads.create_thread(new_thread("t1", inp), also=broken)
    assert not created and again.id == rec.id


@pytest.mark.parametrize("status", ["done", "failed", "canceled"])
def test_a_threads_end_is_dated_in_the_write_that_records_it(backend, status):
    w = World(backend)
    inp = w.put(b"input image", "input")
    rec, _ = w.threads.create_thread(new_thread(f"end-{status}", inp),
                                     also=w.lifecycle.referring("acme", "input", inp))
    ending = w.lifecycle.ending("acme", status)
    if status == "done":
        key = w.put(b"a result", "result")
        w.threads.finish_thread(rec.id, ResultInfo(key, key, 8, "image/png", 1, 1), also=ending)
    elif status == "failed":
        w.threads.fail_thread(rec.id, "operator_failed", "it broke", also=ending)
    else:
        w.threads.mark_canceled(rec.id, also=ending)
    dates = w.store.expiry(rec.id)
    assert dates is not None and dates.status == status
    kinds = {kind for kind, _, until in w.store.refs(rec.id) if until is not None}
    assert kinds == ({"input", "result"} if status == "done" else {"input"})


def test_an_end_refused_by_the_lease_dates_nothing(backend):
    from tilemore.store.leases import LeaseLost

    w = World(backend)
    inp = w.put(b"input image", "input")
    rec, _ = w.threads.create_thread(new_thread("fenced", inp))
    first = w.threads.claim_thread("a", rec.id, 10, now=1000.0)
    w.threads.claim_thread("b", rec.id, 10, now=1011.0)  # a was paused past its lease
    with pytest.raises(LeaseLost):
        w.threads.fail_thread(rec.id, "operator_failed", "late", epoch=first.epoch,
                              also=w.lifecycle.ending("acme", "failed"))
    assert w.store.expiry(rec.id) is None and w.store.refs(rec.id) == []
