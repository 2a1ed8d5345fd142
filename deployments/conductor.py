"""The conductor as a named, detached, restartable Ray actor.

Restarted by Ray after a crash, it picks up every unfinished thread from the registry, so
the service survives the loss of the process that runs it.
"""

from __future__ import annotations

import ray
from tilemore_deployments.billing import get_billing

from tilemore.blobs import open_blob_store
from tilemore.catalog import Catalog
from tilemore.engine.ray_backend import RayBackend
from tilemore.engine.ray_cluster import NodeGuard
from tilemore.engine.ray_metrics import ClusterGauges
from tilemore.metrics import open_metrics
from tilemore.service.conductor import Conductor
from tilemore.service.ecs import EcsErrorLog
from tilemore.service.tracing import Tracer
from tilemore.settings import Settings
from tilemore.store import open_store
from tilemore.store.errors import open_error_index

NAME = "tilemore-conductor"
NAMESPACE = "tilemore"


@ray.remote(num_cpus=0, max_restarts=-1)
class ConductorActor:
    def __init__(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"checkpoint_tasks": True})
        store = open_store(settings)
        catalog = Catalog.load(settings)
        backend = RayBackend(settings)
        # Every replica starts now: models load before the first request, and an operator
        # that cannot work fails the start-up, not a customer's thread.
        backend.prepare(catalog.operators_in_use())
        metrics = open_metrics(settings.metrics)
        self.conductor = Conductor(store, open_blob_store(settings), catalog, backend,
                                   billing=get_billing(settings),
                                   concurrency=settings.conductor_concurrency,
                                   errors=open_error_index(settings),
                                   error_log=EcsErrorLog(settings.errors_log_path),
                                   tracer=Tracer.from_settings(settings),
                                   metrics=metrics)
        self.conductor.start_sweeping()
        self.gauges = ClusterGauges(metrics, store, backend)
        self.gauges.start()
        # Replicas leave draining nodes (a preemption notice, an autoscaler's drain) at once.
        self.guard = NodeGuard(backend.evacuate, settings.preemption_provider,
                               settings.preemption_metadata_url,
                               settings.preemption_poll_seconds)
        self.guard.start()

    def submit(self, thread_id: str) -> bool:
        return self.conductor.submit(thread_id)

    def active(self) -> int:
        return self.conductor.active()


def get_conductor(settings: Settings):
    """The service's conductor, started if it is not running yet."""
    # On the head node (Ray gives it this resource), never on a spot worker: the tile
    # coordinators it starts sit beside it, and a lost worker then costs only tiles.
    return ConductorActor.options(name=NAME, namespace=NAMESPACE, get_if_exists=True,
                                  lifetime="detached",
                                  resources={"node:__internal_head__": 0.001}).remote(settings)
