"""What the conductor records for real threads (in-process backend, metrics kept in memory):
task and queue times per operator, retries by reason, time-to-done, credits per domain that
match the ledger, and QC picks; blob calls timed; wrong names and labels refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from support.images import encode, noisy, photo
from support.service_harness import Service

from tilemore.blobs import BlobNotFound
from tilemore.blobs.local import LocalBlobStore
from tilemore.blobs.timed import TimedBlobStore
from tilemore.metrics import METRICS, MemorySink, Metrics

DATA = Path(__file__).parents[1] / "data"
THREADS = 2


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    sink = MemorySink()
    svc = Service(root, credits="1000", pipeline_paths=[DATA / "metrics.yaml"],
                  recorder=Metrics(sink))
    try:
        bodies = []
        for i in range(THREADS):
            env = {"pipeline": "metrics", "output_format": "png", "adjustments": {
                "shaky": {"failures": 1, "counter": str(root / f"calls-{i}")}}}
            tid = svc.submit(encode(noisy(photo(64, 48), 10, seed=i), "PNG"), env).json()[
                "thread_id"]
            bodies.append(svc.wait(tid))
        assert [b["status"] for b in bodies] == ["done"] * THREADS
        yield sink, svc, bodies
    finally:
        svc.close()


def test_every_task_run_is_timed_by_operator(recorded):
    sink, _, bodies = recorded
    for op in ("decode", "tiled-blur", "spin", "invert", "pick-brightest", "flaky", "encoder"):
        seconds = sink.observed("tilemore_task_seconds", operator=op)
        assert len(seconds) == THREADS, op  # the successful runs, once per thread
        assert all(s >= 0 for s in seconds)
        assert len(sink.observed("tilemore_task_queue_seconds", operator=op)) == THREADS
    spin = [t["seconds"] for b in bodies for t in b["tasks"] if t["operator"] == "spin"]
    assert sorted(sink.observed("tilemore_task_seconds", operator="spin")) == \
        pytest.approx(sorted(spin), abs=1e-3)  # the same times as the thread's answer


def test_retries_are_counted_by_reason(recorded):
    sink, _, _ = recorded
    assert sum(sink.observed("tilemore_task_retries_total", operator="flaky",
                             reason="policy")) == THREADS
    assert sink.observed("tilemore_task_retries_total", reason="replica_lost") == []


def test_threads_time_to_done_and_queue_time(recorded):
    sink, _, bodies = recorded
    done = sink.observed("tilemore_thread_seconds", pipeline="metrics", status="done")
    assert len(done) == THREADS and all(0 < s < 60 for s in done)
    assert len(sink.observed("tilemore_thread_queue_seconds", pipeline="metrics")) == THREADS


def test_credits_per_domain_match_the_ledger(recorded):
    sink, svc, bodies = recorded
    cost = sum((svc.ledger.thread_cost(b["thread_id"]) for b in bodies), Decimal(0))
    assert cost > 0
    assert sum(sink.observed("tilemore_credits_total", domain="acme")) == \
        pytest.approx(float(cost), rel=1e-9)


def test_qc_picks_are_counted_per_candidate(recorded):
    sink, _, bodies = recorded
    picks = [q["pick"] for b in bodies for q in b["qc"]]
    assert len(picks) == THREADS
    for pick in set(picks):
        assert sum(sink.observed("tilemore_qc_picks_total", pipeline="metrics", stage="master",
                                 pick=pick)) == picks.count(pick)


def test_blob_calls_are_timed(tmp_path):
    sink = MemorySink()
    store = TimedBlobStore(LocalBlobStore(tmp_path), Metrics(sink), "local")
    key = store.put(b"bytes")
    assert store.get(key) == b"bytes"
    with pytest.raises(BlobNotFound):
        store.get("0" * 64)  # a failed call is timed too
    assert len(sink.observed("tilemore_blob_seconds", op="put", store="local")) == 1
    assert len(sink.observed("tilemore_blob_seconds", op="get", store="local")) == 2


def test_a_wrong_name_or_label_set_is_refused():
    metrics = Metrics(MemorySink())
    with pytest.raises(KeyError):
        metrics.record("tilemore_no_such_metric", 1)
    with pytest.raises(ValueError, match="takes labels"):
        metrics.record("tilemore_credits_total", 1, account="acme")
    assert all(m.name.startswith("tilemore_") for m in METRICS.values())
