"""OpenTelemetry traces of task threads: one trace per thread, a span per task.

The conductor opens a thread's root span when it starts running the thread and hands each
task's stats to :meth:`ThreadTrace.task_span` once the task has finished, so a task's span
carries the worker's own start and end times (not the conductor's view of them), its
operator, tile count, megapixels and host; retries are events on it, and a task that fails
for good ends with an error status and the exception. Spans leave through a
``BatchSpanProcessor``: the conductor's threads only append to an in-memory queue, and a
background thread exports batches, so tracing adds microseconds per task.

Tracing never fails a thread: an unreachable collector costs the spans it would have
received and one warning on the ``tilemore.tracing`` logger; any other tracing error is
logged and ignored. With ``tracing="off"`` every call here is a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, Status, StatusCode

from tilemore.engine.host import TaskStats
from tilemore.pipeline.run import Retry, TaskFailed
from tilemore.service.failures import error_type
from tilemore.settings_parts import TracingSettings

LOGGER = "tilemore.tracing"
# The OTLP/HTTP exporter logs every failed batch (and every retry of one) on this logger;
# while our wrapper exports, those records are dropped in favour of our single warning.
OTLP_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"

log = logging.getLogger(LOGGER)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class ThreadTrace:
    """One run of a thread, as the conductor sees it. This base class records nothing: it
    is what the conductor gets when tracing is off (or could not start)."""

    trace_id: str | None = None

    def task_started(self, task_id: str, at: float) -> None:
        """A run of the task was handed to the backend (each attempt calls this)."""

    def task_retried(self, retry: Retry, at: float) -> None:
        """A run failed and its retry policy runs it again: an event on the task's span."""

    def task_span(self, stats: TaskStats) -> None:
        """The task finished: its span, from the worker's times."""

    def task_failed(self, failed: TaskFailed, at: float) -> None:
        """The task failed for good: its span ends in error."""

    def finished(self, status: str) -> None:
        """How the thread ended (``done``, ``failed``, ``canceled``)."""


NO_TRACE = ThreadTrace()


def _guarded(method: Any) -> Any:
    """Tracing errors are logged, never raised into the conductor."""
    def call(self: _RecordingTrace, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:  # noqa: BLE001 - a trace is worth less than the thread
            log.warning("tracing: %s failed; the thread goes on", method.__name__,
                        exc_info=True)
    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class _RecordingTrace(ThreadTrace):
    def __init__(self, tracer: trace.Tracer, root: Span) -> None:
        self._tracer = tracer
        self._root = root
        self._parent = trace.set_span_in_context(root, Context())
        self.trace_id = trace.format_trace_id(root.get_span_context().trace_id)
        self._first_start: dict[str, float] = {}  # task id → its first attempt's start
        self._retries: dict[str, list[tuple[dict[str, Any], int]]] = {}

    @_guarded
    def task_started(self, task_id: str, at: float) -> None:
        self._first_start.setdefault(task_id, at)

    @_guarded
    def task_retried(self, retry: Retry, at: float) -> None:
        error = retry.failure.error
        self._retries.setdefault(retry.task.id, []).append(({
            "exception.type": error_type(error), "exception.message": str(error),
            "tilemore.attempt": retry.failures, "tilemore.retry_in_s": retry.delay,
        }, _ns(at)))

    @_guarded
    def task_span(self, stats: TaskStats) -> None:
        # A task that was retried spans its attempts: it starts with the first one.
        start = (min(self._first_start.get(stats.task_id, stats.started), stats.started)
                 if stats.task_id in self._retries else stats.started)
        span = self._start(stats.task_id, stats.operator, start, {
            "tilemore.tiles": getattr(stats, "tiles", 0),  # stats pickled before tiles: 0
            "tilemore.megapixels": stats.megapixels,
            "tilemore.host": stats.host,
            "tilemore.pid": stats.pid,
        })
        span.end(end_time=_ns(max(stats.finished, start)))

    @_guarded
    def task_failed(self, failed: TaskFailed, at: float) -> None:
        start = self._first_start.get(failed.task_id, at)
        span = self._start(failed.task_id, failed.operator, start,
                           {"tilemore.attempts": failed.attempts})
        span.record_exception(failed.error, {"exception.type": error_type(failed.error),
                                             "exception.stacktrace": failed.traceback},
                              timestamp=_ns(at))
        span.set_status(Status(StatusCode.ERROR, f"{error_type(failed.error)}: {failed.error}"))
        span.end(end_time=_ns(max(at, start)))

    @_guarded
    def finished(self, status: str) -> None:
        self._root.set_attribute("tilemore.status", status)
        if status == "failed":
            self._root.set_status(Status(StatusCode.ERROR, "the thread failed"))

    def _start(self, task_id: str, operator: str, start: float,
               attributes: dict[str, Any]) -> Span:
        span = self._tracer.start_span(
            task_id, context=self._parent, start_time=_ns(start),
            attributes={"tilemore.task_id": task_id, "tilemore.operator": operator,
                        **attributes})
        for event, at in self._retries.pop(task_id, ()):
            span.add_event("retry", event, timestamp=at)
        return span


class _ReusableIds(RandomIdGenerator):
    """Random ids, except that a resumed thread's root span gets the trace id the thread
    already has: one trace id per thread, however many runs it takes."""

    def __init__(self) -> None:
        self._wanted = threading.local()

    def reuse(self, trace_id: str | None) -> None:
        self._wanted.trace_id = int(trace_id, 16) if trace_id else None

    def generate_trace_id(self) -> int:
        wanted = getattr(self._wanted, "trace_id", None)
        self._wanted.trace_id = None
        return wanted or super().generate_trace_id()


class Tracer:
    """Where the conductor's spans go. ``Tracer(None)`` (or ``Tracer.from_settings`` with
    tracing off) records nothing; otherwise ended spans are batched to ``exporter``."""

    def __init__(self, exporter: SpanExporter | None, *,
                 schedule_delay_millis: float | None = None,
                 resource: Resource | None = None) -> None:
        """``schedule_delay_millis``: how often a batch leaves (default: the standard
        ``OTEL_BSP_SCHEDULE_DELAY``, else 5 s; a full batch leaves at once)."""
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if exporter is None:
            return
        self._ids = _ReusableIds()
        # Our own provider, not the global one: Ray or a library may have set that up.
        self._provider = TracerProvider(
            resource=resource or Resource.create({"service.name": "tilemore"}),
            id_generator=self._ids)
        self._provider.add_span_processor(BatchSpanProcessor(
            _WarnOnce(exporter), schedule_delay_millis=schedule_delay_millis))
        self._tracer = self._provider.get_tracer("tilemore.conductor")

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracer:
        """The exporter ``settings.tracing`` names (``Settings.traces``): none, stdout, or
        OTLP/HTTP."""
        if settings.tracing == "console":
            return cls(ConsoleSpanExporter())
        if settings.tracing == "otlp":
            # Imported only when asked for: it brings requests and protobuf along.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return cls(OTLPSpanExporter(endpoint=settings.otlp_endpoint,
                                        timeout=settings.otlp_timeout))
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextmanager
    def thread_span(self, thread_id: str, *, trace_id: str | None = None,
                    **attributes: str) -> Iterator[ThreadTrace]:
        """The root span of one run of a thread, as a :class:`ThreadTrace` whose
        ``trace_id`` (32 hex digits, None when off) the thread's record keeps. ``trace_id``:
        the id an earlier run of the thread had, kept for this one. ``attributes`` become
        ``tilemore.<name>`` attributes of the root span."""
        root = self._root(thread_id, trace_id, attributes)
        if root is None or self._tracer is None:
            yield NO_TRACE
            return
        try:
            yield _RecordingTrace(self._tracer, root)
        except BaseException as exc:  # the conductor's own error: recorded, then raised
            _safely(_errored, root, exc)
            raise
        finally:
            _safely(root.end)

    def _root(self, thread_id: str, trace_id: str | None,
              attributes: dict[str, str]) -> Span | None:
        if self._tracer is None:
            return None
        try:
            self._ids.reuse(trace_id if trace_id and len(trace_id) == 32 else None)
            return self._tracer.start_span(
                f"thread {attributes.get('pipeline', '')}".strip(), context=Context(),
                attributes={"tilemore.thread_id": thread_id,
                            **{f"tilemore.{k}": v for k, v in attributes.items()}})
        except Exception:  # noqa: BLE001 - a malformed stored id, a broken SDK…
            log.warning("tracing: thread %s runs untraced", thread_id, exc_info=True)
            return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every ended span now (tests; a graceful stop)."""
        return self._provider.force_flush(timeout_millis) if self._provider else True

    def shutdown(self) -> None:
        """Flush and stop the exporter; later spans are dropped."""
        if self._provider is not None:
            self._provider.shutdown()


def _errored(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{error_type(exc)}: {exc}"))


def _safely(action: Any, *args: Any) -> None:
    try:
        action(*args)
    except Exception:  # noqa: BLE001
        log.warning("tracing: ending a thread's span failed", exc_info=True)


class _Quiet(logging.Filter):
    """Drops the OTLP exporter's records on threads inside :class:`_WarnOnce` exports,
    keeping the first one's words as the reason for our warning."""

    def __init__(self) -> None:
        super().__init__()
        self.exporting = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.exporting, "on", False):
            return True
        if self.exporting.said is None:
            self.exporting.said = record.getMessage()
        return False


_QUIET = _Quiet()
logging.getLogger(OTLP_LOGGER).addFilter(_QUIET)


class _WarnOnce(SpanExporter):
    """An exporter whose failures (an unreachable collector, a refused batch, an exception)
    are one warning for the life of the tracer — not one per batch — and never raise."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.warned = False
        self.failed_batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        quiet = _QUIET.exporting
        quiet.on, quiet.said = True, None
        try:
            result, reason = self.exporter.export(spans), None
        except Exception as exc:  # noqa: BLE001
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        finally:
            quiet.on = False
        reason = reason or quiet.said or "the exporter reported a failure"
        if result is not SpanExportResult.SUCCESS:
            self.failed_batches += 1
            if not self.warned:
                self.warned = True
                log.warning("tracing: could not export %d spans to %s (%s); spans are dropped "
                            "while it fails, threads go on, and this is said once",
                            len(spans), _where(self.exporter), reason)
        return result

    def shutdown(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception:  # noqa: BLE001
            log.debug("tracing: exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _where(exporter: SpanExporter) -> str:
    return str(getattr(exporter, "_endpoint", None) or type(exporter).__name__)
