"""The one module that talks to Ray: operator actors, object refs, start-up.

Each operator gets a small pool of long-lived actors that declare its resources, so models
load once per replica and GPU operators land on GPU nodes. Task inputs are ObjectRefs: Ray
moves arrays between workers through the object store, never through the conductor.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import ray
from ray import cloudpickle
from ray.exceptions import RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tilemore.engine.backend import ReplicaLost
from tilemore.engine.host import OperatorHost
from tilemore.engine.ray_replicas import LOST, Replicas
from tilemore.engine.ray_tiles import fan_out
from tilemore.operator import Operator, OperatorParams
from tilemore.settings import Settings

_INSTALLED_PACKAGES = ("tilemore", "tilemore_operators")
LOST_REPLICA_RETRIES = 3


def ensure_ray(
    settings: Settings, operators: Iterable[type[Operator]] = (), *, quiet: bool = False
) -> None:
    """Connect to ``settings.ray_address``, or start a local cluster without a dashboard.
    ``quiet`` keeps Ray's own start-up chatter and worker output off the terminal (the CLI
    reports task failures itself)."""
    if ray.is_initialized():
        return
    level = logging.ERROR if quiet else logging.WARNING
    if settings.ray_address:
        ray.init(address=settings.ray_address, logging_level=level, log_to_driver=not quiet)
        return
    ray.init(
        num_cpus=settings.ray_num_cpus or local_cpus(operators, settings.replicas),
        include_dashboard=False,
        logging_level=level,
        log_to_driver=not quiet,
    )


def local_cpus(operators: Iterable[type[Operator]], replicas: int = 1) -> int:
    """Logical CPUs for a one-machine cluster: every replica :func:`replica_counts` asks for
    fits, and never fewer than the machine's cores. Actors hold their CPUs for life, while one
    image keeps only a few operators busy at a time, so this oversubscribes on purpose."""
    counts = replica_counts(operators, replicas)
    declared = sum(op.resources.num_cpus * n for op, n in counts.items())
    return max(os.cpu_count() or 1, math.ceil(declared))


def replica_counts(operators: Iterable[type[Operator]], replicas: int) -> dict[type[Operator], int]:
    """Replicas per operator: ``replicas``, or more where one graph uses an operator in
    several tasks (two branches of the same denoiser must not queue behind one actor)."""
    return {op: max(replicas, n) for op, n in Counter(operators).items()}


class RayBackend:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._pools: dict[type[Operator], list[Any]] = {}
        self._up: dict[type[Operator], Replicas] = {}
        # stats ref's hex → its replica (not the ref: that would pin the object)
        self._calls: dict[str, tuple[type[Operator], int]] = {}
        self._lock = threading.Lock()
        self._evacuated: dict[str, int] = {}  # actor id → its restart count when moved

    def _pool(self, operator: type[Operator], size: int | None = None) -> list[Any]:
        pool = self._pools.setdefault(operator, [])
        wanted = max(size or 0, self.settings.replicas)
        if len(pool) < wanted:
            _ship_by_value(operator)
            res = operator.resources
            gpus = res.num_gpus
            if gpus and res.gpu_optional and not ray.cluster_resources().get("GPU"):
                gpus = 0  # no GPU anywhere: the operator's CPU fallback
            # A replica that dies (its node lost) is restarted, on another node if need be.
            # Calls go to replicas that are up and fail fast with a lost one (then run again
            # on another); only when none is up does a call wait for a restart, which Ray's
            # task retries do (a call to a restarting actor would otherwise fail at once).
            actor_cls = ray.remote(OperatorHost).options(
                num_cpus=res.num_cpus, num_gpus=gpus, resources=dict(res.custom) or None,
                max_restarts=-1, max_task_retries=LOST_REPLICA_RETRIES,
                # one node's loss then leaves the operator's other replicas up
                scheduling_strategy="SPREAD",
            )
            pool.extend(actor_cls.remote(operator, self.settings)
                        for _ in range(wanted - len(pool)))
            self._up[operator] = Replicas(pool)
        return pool

    def prepare(self, operators: Iterable[type[Operator]]) -> None:
        """Start the replicas these operators need (one per use in ``operators``, at least
        ``settings.replicas``) and wait until each has run its ``setup``."""
        counts = replica_counts(operators, self.settings.replicas)
        refs = [a.ready.remote() for op, n in counts.items() for a in self._pool(op, n)]
        self._get(refs)

    def replicas(self, operator: type[Operator]) -> list[Any]:
        """The operator's actors (for operations and fault-injection tests)."""
        return list(self._pools.get(operator, []))

    def evacuate(self, nodes: set[str]) -> int:
        """Restart the replicas that live on ``nodes`` (being drained): Ray places them on
        other nodes, and the tasks they were running fail there and retry. Returns how many
        moved."""
        on_nodes = []
        for pool in self._pools.values():
            for actor in pool:
                # the GCS's own table: the state API would need the dashboard
                info = ray._private.state.state.actor_table(actor._actor_id.hex())  # noqa: SLF001
                if info.get("State") != "ALIVE" or info["Address"]["NodeID"] not in nodes:
                    continue
                # The table may still show a replica just killed as alive where it was: kill
                # again only a replica that has restarted since (and landed there again).
                if self._evacuated.get(info["ActorID"], -1) < info["NumRestarts"]:
                    self._evacuated[info["ActorID"]] = info["NumRestarts"]
                    on_nodes.append(actor)
        for actor in on_nodes:
            ray.kill(actor, no_restart=False)
        return len(on_nodes)

    def put(self, value: Any) -> ray.ObjectRef:
        return ray.put(value)

    def call(
        self, task_id: str, operator: type[Operator], params: OperatorParams,
        inputs: Sequence[ray.ObjectRef],
    ) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        pool = self._pool(operator)
        if operator.tiling is not None and len(pool) > 1 and len(inputs) == 1:
            # Tiles across every replica at once, rather than the whole image on one.
            # The tile coordinator stays beside the conductor (the head, not a spot node):
            # a lost worker node then costs only the tiles it was running.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                  soft=True)
            return fan_out.options(num_returns=2, scheduling_strategy=here).remote(
                pool, task_id, operator.name, params, operator.tiling == "exact",
                operator.halo, inputs[0])
        up = self._up[operator]
        up.refresh()
        i = up.next_up()
        retries = 0 if i is not None else LOST_REPLICA_RETRIES
        i = up.next_any() if i is None else i
        output, stats = pool[i].run.options(num_returns=2, max_task_retries=retries).remote(
            task_id, params, *inputs)
        with self._lock:
            self._calls[stats.hex()] = (operator, i)
        return output, stats

    def wait(self, handles: Sequence[ray.ObjectRef], timeout: float | None = None) -> list:
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:  # take everything else that is already done, too
            ready, _ = ray.wait(list(handles), num_returns=len(handles), timeout=0)
        return ready

    def get(self, handle: ray.ObjectRef) -> Any:
        with self._lock:
            replica = self._calls.pop(handle.hex(), None)
        try:
            return self._get(handle)
        except LOST as exc:
            if replica is not None:
                operator, i = replica
                self._up[operator].lost(i)  # set aside until it answers again
            raise ReplicaLost(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _get(ref: Any) -> Any:
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            # Surface the operator's own exception (with its error code), not Ray's wrapper.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def close(self) -> None:
        for pool in self._pools.values():
            for actor in pool:
                ray.kill(actor)
        self._pools.clear()
        self._up.clear()


def _ship_by_value(operator: type[Operator]) -> None:
    """Operators from a customer's ``.py`` file or a test module are not importable on the
    workers; send their module's code along instead of a reference to it."""
    module = sys.modules.get(operator.__module__)
    top = operator.__module__.split(".")[0]
    if module is not None and top not in _INSTALLED_PACKAGES:
        cloudpickle.register_pickle_by_value(module)
