"""Service metrics: what is recorded, under which names and labels.

Every metric Tilemore exports is declared once in :data:`METRICS` (the README's table and the
Grafana dashboards use these names). Recording goes through a :class:`Sink`: on a Ray
cluster :class:`~tilemore.engine.ray_metrics.RaySink` (``ray.util.metrics``, exported by
each node's metrics agent to Prometheus); elsewhere :class:`MemorySink` (tests) or nothing.
Ray's exporter prefixes every name with ``ray_``: ``tilemore_task_seconds`` is scraped as
``ray_tilemore_task_seconds``.
"""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["counter", "gauge", "histogram"]

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FAST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
TILES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("tilemore_task_seconds", "histogram",
           "A task's run on its replica, from its start to its end", ("operator",), SECONDS),
    Metric("tilemore_task_queue_seconds", "histogram",
           "From a task handed to the backend to its start on a replica", ("operator",),
           SECONDS),
    Metric("tilemore_task_tiles", "histogram", "Tiles a tiled task was split into",
           ("operator",), TILES),
    Metric("tilemore_task_retries_total", "counter",
           "Task runs that failed and ran again (reason: policy or replica_lost)",
           ("operator", "reason")),
    Metric("tilemore_thread_seconds", "histogram",
           "A thread's time from accepted to its end (time-to-done when status is done)",
           ("pipeline", "status"), SECONDS),
    Metric("tilemore_thread_queue_seconds", "histogram",
           "From a thread accepted to its first task starting", ("pipeline",), SECONDS),
    Metric("tilemore_threads", "gauge", "Threads in the registry, by status", ("status",)),
    Metric("tilemore_blob_seconds", "histogram", "One blob store call",
           ("op", "store"), FAST_SECONDS),
    Metric("tilemore_blob_bytes", "gauge", "Bytes of the blobs the service keeps, by kind "
           "(input, checkpoint, result)", ("kind",)),
    Metric("tilemore_blob_collected_bytes_total", "counter",
           "Bytes of blobs the collector removed, by kind", ("kind",)),
    Metric("tilemore_replicas", "gauge", "Replicas of a deployment (an operator's actor "
           "pool, or a Serve deployment), by state", ("deployment", "state")),
    Metric("tilemore_nodes", "gauge", "Live cluster nodes that offer a resource kind",
           ("kind",)),
    Metric("tilemore_credits_total", "counter", "Credits charged, by the domain that pays",
           ("domain",)),
    Metric("tilemore_qc_picks_total", "counter",
           "Quality control's picks, by the candidate (denoiser) kept",
           ("pipeline", "stage", "pick")),
)}


class Sink(Protocol):
    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Add to a counter, set a gauge, or observe into a histogram (by the metric)."""


class NullSink:
    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        pass


class MemorySink:
    """Keeps what was recorded, for tests: counters summed, gauges last, histograms listed."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = \
            defaultdict(list)
        self._lock = threading.Lock()

    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        with self._lock:
            self.values[(name, tuple(sorted(labels.items())))].append(value)

    def observed(self, name: str, **labels: str) -> list[float]:
        """Every value recorded for ``name`` whose labels include ``labels``."""
        with self._lock:
            return [v for (n, ls), vs in self.values.items()
                    if n == name and set(labels.items()) <= set(ls) for v in vs]


class Metrics:
    """Typed recording calls; checks each against :data:`METRICS` so a wrong name or label
    fails in tests, not silently in a dashboard."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink or NullSink()
        self.enabled = not isinstance(self.sink, NullSink)

    def record(self, name: str, value: float, **labels: str) -> None:
        if not self.enabled:
            return
        metric = METRICS[name]
        if set(labels) != set(metric.labels):
            raise ValueError(f"{name} takes labels {metric.labels}, got {tuple(labels)}")
        self.sink.record(name, float(value), labels)

    def task_finished(self, operator: str, seconds: float, queued: float | None,
                      tiles: int) -> None:
        self.record("tilemore_task_seconds", seconds, operator=operator)
        if queued is not None:
            self.record("tilemore_task_queue_seconds", max(0.0, queued), operator=operator)
        if tiles:
            self.record("tilemore_task_tiles", tiles, operator=operator)

    def task_retried(self, operator: str, lost: bool) -> None:
        reason = "replica_lost" if lost else "policy"
        self.record("tilemore_task_retries_total", 1, operator=operator, reason=reason)

    def thread_ended(self, pipeline: str, status: str, seconds: float) -> None:
        self.record("tilemore_thread_seconds", seconds, pipeline=pipeline, status=status)

    def thread_started(self, pipeline: str, queued: float) -> None:
        self.record("tilemore_thread_queue_seconds", max(0.0, queued), pipeline=pipeline)

    def charged(self, domain: str, credits: float) -> None:
        self.record("tilemore_credits_total", credits, domain=domain)

    def qc_pick(self, pipeline: str, stage: str, pick: str) -> None:
        self.record("tilemore_qc_picks_total", 1, pipeline=pipeline, stage=stage, pick=pick)

    def blob(self, op: str, store: str, seconds: float) -> None:
        self.record("tilemore_blob_seconds", seconds, op=op, store=store)

    def blobs_stored(self, kind: str, size: int) -> None:
        self.record("tilemore_blob_bytes", size, kind=kind)

    def blobs_collected(self, kind: str, size: int) -> None:
        self.record("tilemore_blob_collected_bytes_total", size, kind=kind)


NO_METRICS = Metrics()


def open_metrics(enabled: bool) -> Metrics:
    """Ray's sink in a process that is part of a Ray cluster (a replica, the conductor, the
    ingress, a CLI driver), else none. Ray is imported only where it already is."""
    if enabled and "ray" in sys.modules:
        from tilemore.engine.ray_metrics import metrics_for

        return metrics_for(enabled)
    return NO_METRICS
