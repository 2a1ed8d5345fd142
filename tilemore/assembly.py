"""The service's parts, made from settings.

Every process that serves Tilemore — an ingress replica, a conductor actor, the CLI, the
benchmarks, the test harness — opens its parts here, so a new concern (a listener on the
conductor's events, a store) is wired once:

- :func:`open_parts`: the registry, blobs, catalog, billing, error index, lifecycle and
  metrics every process shares;
- :meth:`Parts.start_conductor`: a conductor on a backend, with its tracer, error log and,
  where asked, webhooks;
- :meth:`Parts.api`: the HTTP service over the same parts;
- :meth:`Parts.close`: everything this module opened, in an order that lets threads in
  flight finish their step before the stores they write go;
- on one machine: :func:`open_domain` (a demo's or a benchmark's domain with credits),
  :func:`ray_cpus` and :func:`serve_on_ray` (the whole service on Serve),
  :func:`open_backend` (operators on threads or on Ray, for ``tilemore run``).

A caller injects what it must make itself: the billing (a Ray actor's proxy), the metrics
recorder, the backend, the conductor's own listeners.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from tilemore.api.service import ApiService
from tilemore.billing.ledger import Entry, Ledger, open_ledger
from tilemore.billing.service import Billing
from tilemore.blobs import BlobStore, open_blob_store
from tilemore.catalog import Catalog
from tilemore.engine.backend import Backend, LocalBackend
from tilemore.lifecycle import Lifecycle
from tilemore.metrics import Metrics, open_metrics
from tilemore.operator import Operator
from tilemore.service.conductor import Conductor
from tilemore.service.ecs import EcsErrorLog
from tilemore.service.events import Listener
from tilemore.service.tracing import Tracer
from tilemore.settings import Settings
from tilemore.store import open_store
from tilemore.store.error_index import ErrorIndexSQL, open_error_index
from tilemore.store.lifecycle import open_lifecycle_store
from tilemore.webhooks import Deliverer
from tilemore.webhooks import attach as attach_webhooks

IN_FLIGHT_WAIT_S = 10.0  # how long close() lets a conductor's running steps finish


@dataclass(eq=False)
class Parts:
    """One process's parts. ``billing`` is a :class:`Billing` on ``ledger`` when this module
    opened it, else the caller's (the billing actor's proxy), which close() leaves alone."""

    settings: Settings
    store: Any  # the registry: threads and tokens (SQLite or PostgreSQL)
    blobs: BlobStore
    catalog: Catalog
    billing: Any
    ledger: Ledger | None
    errors: ErrorIndexSQL
    lifecycle: Lifecycle
    metrics: Metrics
    backend: Backend | None = None
    conductor: Conductor | None = None
    tracer: Tracer | None = None
    deliverer: Deliverer | None = None
    closed: bool = False

    def start_conductor(self, backend: Backend, *, name: str = "conductor",
                        listeners: Iterable[Listener] = (), webhooks: bool = False
                        ) -> Conductor:
        """The conductor of this process on ``backend`` (closed with the parts), sized and
        leased by the settings; ``webhooks`` also attaches the webhook listener and starts a
        deliverer named after it."""
        s = self.settings
        self.backend = backend
        self.tracer = Tracer.from_settings(s.traces)
        self.conductor = Conductor(self.store, self.blobs, self.catalog, backend,
                                   billing=self.billing, concurrency=s.conductor_concurrency,
                                   errors=self.errors, error_log=EcsErrorLog(s.errors_log_path),
                                   tracer=self.tracer, metrics=self.metrics, name=name,
                                   lease_seconds=s.conductor_lease_seconds,
                                   listeners=listeners, lifecycle=self.lifecycle)
        if webhooks:  # deliverers claim deliveries, so every conductor runs one
            self.deliverer = attach_webhooks(self.conductor, self.store, self.billing,
                                             s.webhooks, name=name)
        return self.conductor

    def api(self, handoff: Callable[[str], Any] | None = None) -> ApiService:
        """The HTTP service; ``handoff`` passes a recorded thread on (default: this
        process's conductor)."""
        if handoff is None:
            if self.conductor is None:
                raise ValueError("no conductor here: give the API a handoff")
            handoff = self.conductor.submit
        return ApiService(self.store, self.store, self.blobs, self.catalog, self.settings,
                          handoff, billing=self.billing, errors=self.errors,
                          lifecycle=self.lifecycle)

    def close(self) -> None:
        """Close what was opened here; a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        if self.conductor is not None:
            self.conductor.close()
            # Threads in flight finish their step first: a store closed under a running
            # query can crash the process (SQLite), not just fail the thread.
            deadline = time.monotonic() + IN_FLIGHT_WAIT_S
            while self.conductor.active() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.deliverer is not None:
            self.deliverer.stop()
        if self.tracer is not None:
            self.tracer.shutdown()  # exports what is left
        if self.backend is not None:
            self.backend.close()
        if self.ledger is not None:  # our own billing: its writer, then its ledger
            self.billing.close()
            self.ledger.close()
        self.errors.close()
        self.lifecycle.store.close()
        self.store.close()


def open_parts(settings: Settings, *, billing: Any | None = None,
               metrics: Metrics | None = None) -> Parts:
    """The parts every process shares, from ``settings``. ``billing``: the caller's (the
    billing actor's proxy), else a :class:`Billing` on the configured ledger; ``metrics``:
    the caller's recorder, else Ray's where Ray runs and metrics are on."""
    store = open_store(settings.db)
    blobs = open_blob_store(settings.blobs)
    catalog = Catalog.load(settings)
    ledger = None
    if billing is None:
        ledger = open_ledger(settings.db)
        billing = Billing(ledger)
    metrics = metrics if metrics is not None else open_metrics(settings.metrics)
    lifecycle = Lifecycle(open_lifecycle_store(settings.db), blobs, settings.retention, metrics)
    return Parts(settings, store, blobs, catalog, billing, ledger, open_error_index(settings.db),
                 lifecycle, metrics)


def open_domain(settings: Settings, domain: str, credits: Decimal, reference: str) -> str:
    """Create ``domain`` with a new token (returned) and ``credits`` ordered as ``reference``
    (the order id: a second call adds none), for a demo or a benchmark."""
    with open_store(settings.db) as store:
        store.create_domain(domain)
        _, secret = store.issue_token(domain)
    with open_ledger(settings.db) as ledger:
        ledger.append([Entry(domain, "order", credits, reference=reference)])
    return secret


# -- on Ray: Ray is imported only by these --------------------------------------------------


def ray_cpus(settings: Settings, catalog: Catalog, spare: int | None = None) -> int:
    """Logical CPUs for the whole service on a one-machine Ray: ``settings.ray_num_cpus``,
    else every operator replica (autoscaled pools at their max) plus ``spare``, by default
    the ingress replicas (autoscaled: at their max; a local cluster has no nodes to add)."""
    if settings.ray_num_cpus:
        return settings.ray_num_cpus
    from tilemore.engine.ray_backend import local_cpus

    if spare is None:
        ingress = settings.ingress_autoscaling
        spare = ingress.max_replicas if ingress else settings.ingress_replicas
    return local_cpus(catalog.operators_in_use(), settings.replicas, settings=settings) + spare


def serve_on_ray(settings: Settings, *, access_log: bool = True) -> None:
    """Start Serve on ``settings.host:port`` and run the service's application on it (its
    ingress; the conductors and the billing actor start with it)."""
    from ray import serve
    from tilemore_deployments.ingress import build_app

    logging_config: dict[str, Any] = {"log_level": "WARNING"}
    if not access_log:
        logging_config["enable_access_log"] = False
    serve.start(http_options={"host": settings.host, "port": settings.port},
                logging_config=logging_config)
    serve.run(build_app(settings), name="tilemore", route_prefix="/")


def open_backend(kind: Literal["local", "ray"], settings: Settings,
                 operators: list[type[Operator]]) -> Backend:
    """A backend with the replicas ``operators`` need ready (one per use): threads in this
    process, or actors on Ray (joined, or started for these operators)."""
    if kind == "local":
        backend: Backend = LocalBackend(settings)
    else:
        from tilemore.engine.ray_backend import RayBackend, ensure_ray

        ensure_ray(settings, operators, quiet=True)
        backend = RayBackend(settings)
    backend.prepare(operators)
    return backend
