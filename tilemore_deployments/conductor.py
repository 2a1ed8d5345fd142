"""The conductor as a named, detached, restartable Ray actor.

Restarted by Ray after a crash, it picks up every unfinished thread from the registry, so
the service survives the loss of the process that runs it. Each deploy runs conductors of
its own generation, and retires the older ones: they finish what they run, take nothing new,
and stop (:mod:`tilemore.service.generations`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

import ray

from tilemore.assembly import open_parts
from tilemore.engine.ray_backend import RayBackend
from tilemore.engine.ray_cluster import NodeGuard
from tilemore.engine.ray_metrics import ClusterGauges
from tilemore.lifecycle import Collector
from tilemore.service.conductor_pool import ConductorPool, PoolPolicy
from tilemore.service.generations import (
    Retirement,
    generation_of,
    named,
    older,
    superseded,
)
from tilemore.service.handoffs import HandOffs
from tilemore.settings import Settings
from tilemore_deployments.billing import get_billing, stop_older_billing

NAME = "tilemore-conductor"
ON_DEMAND = "on_demand"  # the custom resource of nodes that are not spot or preemptible
NAMESPACE = "tilemore"
SCALE_SECONDS = 5.0  # how often the first conductor looks at the backlog
# After the older conductors stopped: time for the older ingress replicas, which Serve stops
# as this deploy's come up (after their requests in flight), to have gone.
BILLING_GRACE_SECONDS = 120.0
log = logging.getLogger("tilemore.conductor")


@ray.remote(num_cpus=0, max_restarts=-1)
class ConductorActor:
    """Conductor ``slot``. Slot 0 also watches the cluster (its gauges, draining nodes) and
    runs the pool of the others (``settings.conductors``, up to ``max_conductors`` with the
    backlog: :mod:`tilemore.service.conductor_pool`), and retires the conductors of older
    generations (deploys)."""

    def __init__(self, settings: Settings, slot: int = 0, generation: str = "") -> None:
        settings = settings.model_copy(update={"checkpoint_tasks": True})
        self.slot, self.generation, self.retiring = slot, generation, False
        self._stoppable: list = []  # slot 0's background work, stopped when it retires
        if slot == 0:  # before this generation's replicas start: the old ones' CPUs come back
            self._retire_older()  # as the old conductors finish
        parts = open_parts(settings, billing=get_billing(settings, generation))
        backend = RayBackend(settings)
        # Every replica starts now: models load before the first request, and an operator
        # that cannot work fails the start-up, not a customer's thread.
        backend.prepare(parts.catalog.operators_in_use())
        # Webhooks: the listener writes the outbox, and every conductor's deliverer sends it
        # (they claim deliveries, so any number share it).
        self.conductor = parts.start_conductor(
            backend, name=conductor_name(slot, generation), webhooks=True)
        self.deliverer = parts.deliverer
        store, metrics = parts.store, parts.metrics
        if superseded(running_conductors(), generation):  # restarted after a newer deploy
            self.retire()
        self.conductor.start_sweeping()
        if slot != 0 or self.retiring:
            return
        self.collector = Collector(parts.lifecycle)  # what expired goes, every gc_interval_seconds
        self.gauges = ClusterGauges(metrics, store, backend)
        # Replicas leave draining nodes (a preemption notice, an autoscaler's drain) at once.
        self.guard = NodeGuard.from_settings(backend.evacuate, settings.preemption)
        self._stoppable = [self.collector, self.gauges, self.guard]
        for part in self._stoppable:
            part.start()
        self.pool = conductor_pool(settings, store, generation)
        self.pool.step()  # the floor's conductors now
        if self.pool.policy.maximum > self.pool.policy.minimum:
            threading.Thread(target=self._scale, name="conductor-pool", daemon=True).start()

    def _scale(self) -> None:
        while not self.retiring:
            try:
                self.pool.step()
            except Exception as exc:  # noqa: BLE001 - the registry briefly down: next time
                log.warning("conductor pool: %s", exc)
            time.sleep(SCALE_SECONDS)

    def _retire_older(self) -> None:
        handles = {name: ray.get_actor(name, namespace=NAMESPACE)
                   for name in older(running_conductors(), self.generation)}
        retirement: Retirement = Retirement(
            # a conductor from before generations has no retire: its drain does the same
            drain=lambda handle: ray.get(getattr(handle, "retire", handle.drain).remote(),
                                         timeout=30),
            stop=lambda handle: ray.kill(handle, no_restart=True))
        for name, handle in handles.items():
            log.info("generation %s retires conductor %s", self.generation, name)
            retirement.add(name, handle)
        retirement.run_in_background(then=self._stop_older_billing)

    def _stop_older_billing(self) -> None:
        """The older deploys' billing actors, once their conductors are stopped and their
        ingress replicas had time to go."""
        time.sleep(BILLING_GRACE_SECONDS)
        if not self.retiring:  # a newer deploy does it now
            stop_older_billing(self.generation)

    def drain(self) -> int:
        return self.conductor.drain()

    def retire(self) -> int:
        """A newer generation runs: take no new thread, stop the background work slot 0
        does for the service (the new slot 0 does it now); the threads still running."""
        self.retiring = True
        for part in self._stoppable:
            part.stop()
        self._stoppable = []
        return self.conductor.drain()

    def submit(self, thread_id: str) -> bool:
        return self.conductor.submit(thread_id)

    def active(self) -> int:
        return self.conductor.active()

    def name(self) -> str:
        return self.conductor.name


def conductor_pool(settings: Settings, store, generation: str = "") -> ConductorPool:
    """Slot 0's pool of the other conductors, as Ray actors."""
    policy = PoolPolicy(settings.conductors, max(settings.conductors,
                                                 settings.max_conductors or 0),
                        settings.conductor_concurrency, settings.conductor_downscale_seconds)
    return ConductorPool(
        policy, backlog=lambda: sum(store.backlog().values()),
        start=lambda slot: get_conductor(settings, slot, generation),
        drain=lambda handle: ray.get(handle.drain.remote(), timeout=30),
        stop=lambda handle: ray.kill(handle, no_restart=True))


def conductor_name(slot: int, generation: str = "") -> str:
    return named(NAME if slot == 0 else f"{NAME}-{slot}", generation)


def get_conductor(settings: Settings, slot: int = 0, generation: str = ""):
    """Conductor ``slot`` of ``generation``, started if it is not running yet (slot 0 starts
    the others)."""
    return ConductorActor.options(
        name=conductor_name(slot, generation), namespace=NAMESPACE, get_if_exists=True,
        lifetime="detached", resources=_placement(slot)).remote(settings, slot, generation)


def hand_offs(settings: Settings, generation: str = "") -> HandOffs:
    """The ingress's hand-offs to the conductors of ``generation``, its first conductor
    started if it is not running yet."""
    first = get_conductor(settings, generation=generation)
    return HandOffs(conductor_name(0, generation), names=lambda: conductors_of(generation),
                    handle=conductor_handle, first_handle=first)


def conductors_of(generation: str) -> list[str]:
    """The names of ``generation``'s conductors alive (or restarting)."""
    return [n for n in running_conductors() if generation_of(n) == generation]


def conductor_handle(name: str) -> Any:
    return ray.get_actor(name, namespace=NAMESPACE)


def submit(conductor: Any, thread_id: str) -> Future[bool]:
    """Ask a conductor to take a thread now, without waiting for its answer."""
    return conductor.submit.remote(thread_id).future()


def running_conductors() -> list[str]:
    """The names of the conductor actors alive (or restarting), every generation's."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == NAMESPACE and a["name"].startswith(NAME))


def _placement(slot: int) -> dict[str, float]:
    # The first on the head node (Ray gives it this resource), never on a spot worker: the
    # tile coordinators it starts sit beside it, and a lost worker then costs only tiles.
    # The others on on-demand nodes where the cluster has them: their loss costs a lease.
    if slot and ray.cluster_resources().get(ON_DEMAND):
        return {ON_DEMAND: 0.001}
    return {"node:__internal_head__": 0.001}
