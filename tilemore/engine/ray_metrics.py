"""Metrics on Ray: :mod:`ray.util.metrics` objects behind :class:`tilemore.metrics.Sink`, and
the gauges read from the cluster itself (nodes, Serve replicas).

Each process that records makes its own metric objects (they are not picklable); Ray's
metrics agent on each node aggregates them and serves them to Prometheus.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import ray
from ray.util import metrics as ray_metrics

from tilemore.metrics import METRICS, Metrics, NullSink

log = logging.getLogger("tilemore.metrics")
THREAD_STATUSES = ("processing", "done", "failed", "canceled")
GPU_KINDS = ("GPU", "gpu_node")  # resources that make a node a GPU node (the tests stand in)


class RaySink:
    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _metric(self, name: str) -> Any:
        with self._lock:
            if name not in self._made:
                m = METRICS[name]
                if m.kind == "counter":
                    made = ray_metrics.Counter(name, m.description, m.labels)
                elif m.kind == "gauge":
                    made = ray_metrics.Gauge(name, m.description, m.labels)
                else:
                    made = ray_metrics.Histogram(name, m.description, list(m.boundaries),
                                                 m.labels)
                self._made[name] = made
            return self._made[name]

    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        metric = self._metric(name)
        tags = dict(labels)
        if isinstance(metric, ray_metrics.Counter):
            if value > 0:  # Ray refuses 0 (a free task charges nothing)
                metric.inc(value, tags)
        elif isinstance(metric, ray_metrics.Gauge):
            metric.set(value, tags)
        else:
            metric.observe(value, tags)


@functools.cache
def _process_sink() -> RaySink:
    return RaySink()


def metrics_for(enabled: bool) -> Metrics:
    """Ray's sink when metrics are on and this process is part of a Ray cluster: one per
    process, so the conductor, its blob store and a replica's checkpoints share their
    metric objects instead of each registering its own."""
    if enabled and ray.is_initialized():
        return Metrics(_process_sink())
    return Metrics(NullSink())


def node_kinds() -> Counter[str]:
    """Live nodes by kind: ``cpu`` for every node with CPUs, ``gpu`` for those with a GPU
    (or the tests' stand-in resource), and ``head``."""
    kinds: Counter[str] = Counter()
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        if res.get("CPU"):
            kinds["cpu"] += 1
        if any(res.get(k) for k in GPU_KINDS):
            kinds["gpu"] += 1
        if "node:__internal_head__" in res:
            kinds["head"] += 1
    return kinds


def serve_replicas() -> dict[str, Counter[str]]:
    """Serve deployment → replicas by state, when Serve runs on this cluster."""
    try:
        from ray import serve

        status = serve.status()
    except Exception:  # noqa: BLE001 - no Serve here: nothing to report
        return {}
    out: dict[str, Counter[str]] = {}
    for app in status.applications.values():
        for name, dep in app.deployments.items():
            out[name] = Counter({str(state).lower().split(".")[-1]: n
                                 for state, n in dep.replica_states.items()})
    return out


class ClusterGauges:
    """Every few seconds, beside the conductor: threads by status, replicas per deployment
    (operator pools and Serve deployments) and nodes per kind. Gauges, not counters: they
    are read from the registry and the cluster, so a restarted conductor reports the truth."""

    def __init__(self, metrics: Metrics, threads: Any, backend: Any,
                 period: float = 5.0) -> None:
        self.metrics, self.threads, self.backend, self.period = metrics, threads, backend, period
        self._stop = threading.Event()
        self._seen: dict[str, set[tuple[str, ...]]] = {}  # gauge → label sets set before

    def start(self) -> None:
        if self.metrics.enabled:
            threading.Thread(target=self._loop, name="cluster-gauges", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.collect()
            except Exception as exc:  # noqa: BLE001 - metrics never stop the service
                log.warning("cluster gauges not recorded: %s", exc)
            self._stop.wait(self.period)

    def collect(self) -> None:
        counts = self.threads.thread_counts()
        self._set("tilemore_threads", {(s,): counts.get(s, 0) for s in THREAD_STATUSES})
        replicas = {**self.backend.replica_states(), **serve_replicas()}
        self._set("tilemore_replicas", {(dep, state): n for dep, states in replicas.items()
                                        for state, n in states.items()})
        kinds = node_kinds()
        self._set("tilemore_nodes", {(k,): kinds.get(k, 0) for k in ("cpu", "gpu", "head")})

    def _set(self, name: str, values: dict[tuple[str, ...], float]) -> None:
        """Set each label set; one seen before and gone now is set to 0, not left stale."""
        labels = METRICS[name].labels
        gone = self._seen.get(name, set()) - set(values)
        for key, value in [*values.items(), *((k, 0) for k in gone)]:
            self.metrics.record(name, value, **dict(zip(labels, key, strict=True)))
        self._seen[name] = set(values) | gone
