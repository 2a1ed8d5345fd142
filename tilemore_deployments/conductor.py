"""The conductor as a named, detached, restartable Ray actor.

Restarted by Ray after a crash, it picks up every unfinished thread from the registry, so
the service survives the loss of the process that runs it.
"""

from __future__ import annotations

import logging
import threading
import time

import ray

from tilemore.assembly import open_parts
from tilemore.engine.ray_backend import RayBackend
from tilemore.engine.ray_cluster import NodeGuard
from tilemore.engine.ray_metrics import ClusterGauges
from tilemore.lifecycle import Collector
from tilemore.service.conductor_pool import ConductorPool, PoolPolicy
from tilemore.settings import Settings
from tilemore_deployments.billing import get_billing

NAME = "tilemore-conductor"
ON_DEMAND = "on_demand"  # the custom resource of nodes that are not spot or preemptible
NAMESPACE = "tilemore"
SCALE_SECONDS = 5.0  # how often the first conductor looks at the backlog
log = logging.getLogger("tilemore.conductor")


@ray.remote(num_cpus=0, max_restarts=-1)
class ConductorActor:
    """Conductor ``slot``. Slot 0 also watches the cluster (its gauges, draining nodes) and
    runs the pool of the others (``settings.conductors``, up to ``max_conductors`` with the
    backlog: :mod:`tilemore.service.conductor_pool`)."""

    def __init__(self, settings: Settings, slot: int = 0) -> None:
        settings = settings.model_copy(update={"checkpoint_tasks": True})
        parts = open_parts(settings, billing=get_billing(settings))
        backend = RayBackend(settings)
        # Every replica starts now: models load before the first request, and an operator
        # that cannot work fails the start-up, not a customer's thread.
        backend.prepare(parts.catalog.operators_in_use())
        # Webhooks: the listener writes the outbox, and every conductor's deliverer sends it
        # (they claim deliveries, so any number share it).
        self.conductor = parts.start_conductor(backend, name=conductor_name(slot),
                                               webhooks=True)
        self.deliverer = parts.deliverer
        store, metrics = parts.store, parts.metrics
        self.conductor.start_sweeping()
        if slot != 0:
            return
        self.collector = Collector(parts.lifecycle)  # what expired goes, every gc_interval_seconds
        self.collector.start()
        self.gauges = ClusterGauges(metrics, store, backend)
        self.gauges.start()
        # Replicas leave draining nodes (a preemption notice, an autoscaler's drain) at once.
        self.guard = NodeGuard.from_settings(backend.evacuate, settings.preemption)
        self.guard.start()
        self.pool = conductor_pool(settings, store)
        self.pool.step()  # the floor's conductors now
        if self.pool.policy.maximum > self.pool.policy.minimum:
            threading.Thread(target=self._scale, name="conductor-pool", daemon=True).start()

    def _scale(self) -> None:
        while True:
            try:
                self.pool.step()
            except Exception as exc:  # noqa: BLE001 - the registry briefly down: next time
                log.warning("conductor pool: %s", exc)
            time.sleep(SCALE_SECONDS)

    def drain(self) -> int:
        return self.conductor.drain()

    def submit(self, thread_id: str) -> bool:
        return self.conductor.submit(thread_id)

    def active(self) -> int:
        return self.conductor.active()

    def name(self) -> str:
        return self.conductor.name


def conductor_pool(settings: Settings, store) -> ConductorPool:
    """Slot 0's pool of the other conductors, as Ray actors."""
    policy = PoolPolicy(settings.conductors, max(settings.conductors,
                                                 settings.max_conductors or 0),
                        settings.conductor_concurrency, settings.conductor_downscale_seconds)
    return ConductorPool(
        policy, backlog=lambda: sum(store.backlog().values()),
        start=lambda slot: get_conductor(settings, slot),
        drain=lambda handle: ray.get(handle.drain.remote(), timeout=30),
        stop=lambda handle: ray.kill(handle, no_restart=True))


def conductor_name(slot: int) -> str:
    return NAME if slot == 0 else f"{NAME}-{slot}"


def get_conductor(settings: Settings, slot: int = 0):
    """Conductor ``slot``, started if it is not running yet (slot 0 starts the others)."""
    return ConductorActor.options(name=conductor_name(slot), namespace=NAMESPACE,
                                  get_if_exists=True, lifetime="detached",
                                  resources=_placement(slot)).remote(settings, slot)


def _placement(slot: int) -> dict[str, float]:
    # The first on the head node (Ray gives it this resource), never on a spot worker: the
    # tile coordinators it starts sit beside it, and a lost worker then costs only tiles.
    # The others on on-demand nodes where the cluster has them: their loss costs a lease.
    if slot and ray.cluster_resources().get(ON_DEMAND):
        return {ON_DEMAND: 0.001}
    return {"node:__internal_head__": 0.001}
