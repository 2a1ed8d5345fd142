"""Traces of real threads: the trace id in the store (both databases, old ones migrated) and
in the thread's answer; spans sent over OTLP/HTTP to a collector on loopback, one trace per
thread with a span per task; and an unreachable collector costing one warning, no thread."""

from __future__ import annotations

import logging
import socket
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.images import encode, noisy, photo
from support.service_harness import Service, free_port
from support.thread_records import died_after_decode, new_thread, service_parts, stored_thread
from support.waits import until

from tilemore.engine import LocalBackend
from tilemore.service.conductor import Conductor
from tilemore.service.tracing import LOGGER, OTLP_LOGGER, Tracer

BROKEN = Path(__file__).parents[1] / "data" / "broken.yaml"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


# -- the store, on SQLite and PostgreSQL -------------------------------------------------------


def test_the_trace_id_is_kept_with_the_thread(backend):
    store = backend.store()
    store.create_domain("acme")
    rec, _ = store.create_thread(new_thread("t1"))
    assert rec.trace_id is None
    store.set_trace_id(rec.id, TRACE_ID)
    after = store.get_thread(rec.id)
    assert after.trace_id == TRACE_ID and after.updated_at == rec.updated_at


def test_a_database_from_before_traces_gets_the_column(backend):
    store = backend.store()
    store.create_domain("acme")
    rec, _ = store.create_thread(new_thread("t2"))
    store.close()
    backend.execute("ALTER TABLE threads DROP COLUMN trace_id")  # as an older release made it
    again = backend.store()  # adds the column
    assert again.get_thread(rec.id).trace_id is None  # the old thread reads as it was
    again.set_trace_id(rec.id, TRACE_ID)
    assert again.get_thread(rec.id).trace_id == TRACE_ID
    assert backend.store().get_thread(rec.id).trace_id == TRACE_ID  # and opening is idempotent


def test_a_resumed_thread_keeps_its_trace_id(backend):
    settings, store, blobs, catalog = service_parts(backend)
    rec = stored_thread(store, blobs, catalog.pipeline("thumbnail").fingerprint)
    exporter = InMemorySpanExporter()
    tracer = Tracer(exporter)
    try:
        Conductor(store, blobs, catalog, LocalBackend(settings), tracer=tracer).run_thread(rec.id)
        trace_id = store.get_thread(rec.id).trace_id
        assert trace_id is not None and len(trace_id) == 32
        died_after_decode(store, rec.id)
        Conductor(store, blobs, catalog, LocalBackend(settings), tracer=tracer).run_thread(rec.id)
        assert store.get_thread(rec.id).trace_id == trace_id
        tracer.force_flush()
        finished = exporter.get_finished_spans()
    finally:
        tracer.shutdown()
    assert {f"{s.context.trace_id:032x}" for s in finished} == {trace_id}
    # Two runs, two roots; decode ran once, the others twice.
    names = sorted(s.name for s in finished)
    assert names == sorted(["thread thumbnail"] * 2 + ["decode"] + ["shifter", "encoder"] * 2)


# -- OTLP over HTTP ----------------------------------------------------------------------------


class Collector:
    """An OTLP/HTTP traces endpoint on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces"
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.requests.append(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def traces(self) -> dict[str, list[tuple[Span, dict]]]:
        """Spans by trace id (hex), each with its attributes as a dict."""
        found: dict[str, list[tuple[Span, dict]]] = defaultdict(list)
        for request in self.requests:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        found[span.trace_id.hex()].append((span, _attributes(span.attributes)))
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(kvs) -> dict:
    def value(v):
        return getattr(v, v.WhichOneof("value"))
    return {kv.key: value(kv.value) for kv in kvs}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    collector = Collector()
    svc = Service(tmp_path_factory.mktemp("traces"), tracing="otlp",
                  otlp_endpoint=collector.url, pipeline_paths=[BROKEN])
    done = svc.wait(svc.submit(encode(photo(64, 48), "PNG"), {
        "adjustments": {}, "pipeline": "thumbnail"}).json()["thread_id"])
    failed = svc.wait(svc.submit(encode(noisy(photo(48, 32), 10, seed=3), "PNG"), {
        "adjustments": {}, "pipeline": "broken"}).json()["thread_id"])

    def roots_exported() -> bool:  # a thread's root span ends just after its status is written
        svc.tracer.force_flush()
        traces = collector.traces()
        return all(any(not s.parent_span_id for s, _ in traces.get(b["trace_id"], ()))
                   for b in (done, failed))

    assert until(roots_exported, 10)
    yield svc, collector, done, failed
    svc.close()
    collector.close()


def _one_trace(collector: Collector, body: dict) -> tuple[tuple[Span, dict], dict]:
    spans = collector.traces()[body["trace_id"]]
    roots = [s for s in spans if not s[0].parent_span_id]
    assert len(roots) == 1
    root = roots[0]
    children = {attrs["tilemore.task_id"]: (span, attrs) for span, attrs in spans
                if span.parent_span_id == root[0].span_id}
    assert len(children) == len(spans) - 1  # every other span hangs from the thread's
    return root, children


def test_a_thread_is_one_trace_with_a_span_per_task(collected):
    svc, collector, body, _ = collected
    assert body["status"] == "done"
    assert len(body["trace_id"]) == 32 and int(body["trace_id"], 16)
    (root, root_attrs), children = _one_trace(collector, body)
    assert root.name == "thread thumbnail"
    assert root_attrs["tilemore.thread_id"] == body["thread_id"]
    assert root_attrs["tilemore.status"] == "done" and root_attrs["tilemore.domain"] == "acme"
    rec = svc.store.get_thread(body["thread_id"])
    assert rec.trace_id == body["trace_id"]
    assert sorted(children) == sorted(t.task_id for t in rec.tasks) == sorted(
        t["id"] for t in body["tasks"])
    for task in rec.tasks:
        span, attrs = children[task.task_id]
        assert span.name == task.task_id
        assert attrs["tilemore.operator"] == task.operator
        assert attrs["tilemore.megapixels"] == pytest.approx(task.megapixels)
        assert attrs["tilemore.tiles"] == 0  # run whole: only a splitting backend tiles
        assert attrs["tilemore.host"] == socket.gethostname()
        # The times the thread's record shows are the span's.
        assert span.start_time_unix_nano == int(task.started_at * 1e9)
        assert span.end_time_unix_nano == int(task.finished_at * 1e9)
        assert root.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= root.end_time_unix_nano
        assert span.status.code == Status.STATUS_CODE_UNSET
    resource = {kv.key: kv.value.string_value
                for kv in collector.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "tilemore"


def test_a_failed_task_is_an_error_span_with_its_retries(collected):
    _, collector, _, body = collected
    assert body["status"] == "failed" and len(body["trace_id"]) == 32
    (root, root_attrs), children = _one_trace(collector, body)
    assert root.status.code == Status.STATUS_CODE_ERROR
    assert root_attrs["tilemore.status"] == "failed"
    boom, attrs = children["boom"]
    assert attrs["tilemore.operator"] == "explode" and attrs["tilemore.attempts"] == 3
    assert boom.status.code == Status.STATUS_CODE_ERROR
    assert boom.status.message == "ZeroDivisionError: the operator broke"
    events = [(e.name, _attributes(e.attributes)) for e in boom.events]
    assert [name for name, _ in events] == ["retry", "retry", "exception"]
    assert [a["tilemore.attempt"] for _, a in events[:2]] == [1, 2]
    assert 'raise ZeroDivisionError("the operator broke")' in events[2][1][
        "exception.stacktrace"]
    assert set(children) == {"decode", "boom"}  # the encoder never ran


def test_the_failed_task_s_ecs_line_carries_the_trace_id(collected, caplog):
    svc, _, _, _ = collected
    with caplog.at_level(logging.ERROR, logger="tilemore.errors.ecs"):
        body = svc.wait(svc.submit(encode(noisy(photo(48, 32), 10, seed=4), "PNG"), {
            "adjustments": {}, "pipeline": "broken"}).json()["thread_id"])
    lines = [r.getMessage() for r in caplog.records if r.name == "tilemore.errors.ecs"]
    assert lines and f'"trace": {{"id": "{body["trace_id"]}"}}' in lines[-1]


def test_an_unreachable_collector_costs_one_warning_and_no_thread(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    caplog.set_level(logging.DEBUG, logger=OTLP_LOGGER)
    port = free_port()  # a loopback port nobody listens on
    svc = Service(tmp_path, tracing="otlp", otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces",
                  otlp_timeout=0.5)
    try:
        bodies = []
        for seed in range(3):
            image = encode(noisy(photo(64, 48), 10, seed=seed), "PNG")
            sent = svc.submit(image, {"adjustments": {}, "pipeline": "thumbnail"})
            bodies.append(svc.wait(sent.json()["thread_id"]))
            svc.tracer.force_flush()  # a batch per thread: three failed exports
    finally:
        svc.close()
    assert [b["status"] for b in bodies] == ["done"] * 3
    assert all(len(b["trace_id"]) == 32 for b in bodies)  # recorded all the same
    said = [r for r in caplog.records if r.name in (LOGGER, OTLP_LOGGER)]
    assert [(r.name, r.levelname) for r in said] == [(LOGGER, "WARNING")]
    assert f"127.0.0.1:{port}" in said[0].getMessage()
