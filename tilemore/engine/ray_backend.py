"""The backend on Ray: calls to operator replicas, object refs, start-up.

Task inputs are ObjectRefs: Ray moves arrays between workers through the object store, never
through the conductor. The replicas a call goes to, and their autoscaling, are
:mod:`tilemore.engine.ray_pools`'s; Ray's private APIs are behind
:mod:`tilemore.engine.ray_private`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import ray
from ray.exceptions import RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tilemore.engine.backend import ReplicaLost
from tilemore.engine.ray_pools import (
    LOST_REPLICA_RETRIES,
    Call,
    RayPools,
    local_cpus,
    replica_counts,
    ship_by_value,
)
from tilemore.engine.ray_replicas import LOST
from tilemore.engine.ray_tiles import fan_out
from tilemore.operator import Operator, OperatorParams
from tilemore.settings import Settings

__all__ = ["LOST_REPLICA_RETRIES", "RayBackend", "ensure_ray", "get_unwrapped", "local_cpus",
           "replica_counts", "ship_by_value"]


def ensure_ray(
    settings: Settings, operators: Iterable[type[Operator]] = (), *, quiet: bool = False,
    dashboard: bool = False,
) -> None:
    """Connect to ``settings.ray_address``, or start a local cluster. ``quiet`` keeps Ray's
    own start-up chatter and worker output off the terminal (the CLI reports task failures
    itself); ``dashboard`` starts Ray's dashboard, whose head writes the service-discovery
    file Prometheus finds the nodes' metrics agents by."""
    if ray.is_initialized():
        return
    level = logging.ERROR if quiet else logging.WARNING
    if settings.ray_address:
        ray.init(address=settings.ray_address, logging_level=level, log_to_driver=not quiet)
        return
    ray.init(
        address="local",  # a cluster of its own, never one a `ray start` left on the machine
        num_cpus=settings.ray_num_cpus or local_cpus(operators, settings.replicas,
                                                     settings=settings),
        include_dashboard=dashboard,
        logging_level=level,
        log_to_driver=not quiet,
    )


class RayBackend:
    """Calls on Ray: each goes to a replica that is up in its operator's pool (or, for a
    tiled operator, across the whole pool), and a call lost with its replica's node raises
    :class:`ReplicaLost` so the conductor runs it again."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.pools = RayPools(self.settings)

    def prepare(self, operators: Iterable[type[Operator]]) -> None:
        """Start the replicas these operators need (one per use in ``operators``, at least
        ``settings.replicas`` or an autoscaled pool's ``min_replicas``) and wait until each
        has run its ``setup``."""
        self._get(self.pools.ready_refs(operators))

    def replicas(self, operator: type[Operator]) -> list[Any]:
        """The operator's actors (for operations and fault-injection tests)."""
        return self.pools.replicas(operator)

    def replica_states(self) -> dict[str, dict[str, int]]:
        return self.pools.replica_states()

    def evacuate(self, nodes: set[str]) -> int:
        return self.pools.evacuate(nodes)

    def autoscale(self, now: float | None = None) -> None:
        self.pools.autoscale(now)

    def put(self, value: Any) -> ray.ObjectRef:
        return ray.put(value)

    def call(
        self, task_id: str, operator: type[Operator], params: OperatorParams,
        inputs: Sequence[ray.ObjectRef],
    ) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        # Under the pools' lock from choosing a replica to recording the call: the autoscaler
        # then never sees a replica it retired as idle while a call to it is on its way.
        with self.pools.lock:
            up = self.pools.up(operator)
            pool = up.hosts
            if operator.tiling is not None and len(pool) > 1 and len(inputs) == 1:
                # Tiles across every replica at once, rather than the whole image on one.
                # The tile coordinator stays beside the conductor (the head, not a spot
                # node): a lost worker node then costs only the tiles it was running.
                here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                      soft=True)
                output, stats = fan_out.options(num_returns=2, scheduling_strategy=here).remote(
                    pool, task_id, operator.name, params, operator.tiling == "exact",
                    operator.halo, inputs[0])
                self.pools.track(stats, Call(operator, None, tuple(pool)))
                return output, stats
            up.refresh()
            i = up.next_up()
            retries = 0 if i is not None else LOST_REPLICA_RETRIES
            i = up.next_any() if i is None else i
            output, stats = pool[i].run.options(num_returns=2, max_task_retries=retries).remote(
                task_id, params, *inputs)
            self.pools.track(stats, Call(operator, pool[i], (pool[i],)))
            return output, stats

    def plan(self, operator: type[Operator], params: OperatorParams,
             original: ray.ObjectRef, branches: list[str]) -> ray.ObjectRef:
        with self.pools.lock:
            up = self.pools.up(operator)
            up.refresh()
            i = up.next_up()
            i = up.next_any() if i is None else i
            return up.hosts[i].plan.remote(params, original, branches)

    def wait(self, handles: Sequence[ray.ObjectRef], timeout: float | None = None) -> list:
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:  # take everything else that is already done, too
            ready, _ = ray.wait(list(handles), num_returns=len(handles), timeout=0)
        return ready

    def future(self, handle: ray.ObjectRef) -> Future:
        return handle.future()

    def get(self, handle: ray.ObjectRef) -> Any:
        # The call is forgotten once its result is here, not before: until then the
        # autoscaler counts it, and keeps its replica alive.
        try:
            return self._get(handle)
        except LOST as exc:
            self.pools.lost(handle)  # its replica set aside until it answers again
            raise ReplicaLost(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.pools.forget(handle)

    @staticmethod
    def _get(ref: Any) -> Any:
        return get_unwrapped(ref)

    def close(self) -> None:
        self.pools.close()


def get_unwrapped(ref: Any) -> Any:
    """``ray.get``, raising the operator's own exception (with its error code), not Ray's
    wrapper."""
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
