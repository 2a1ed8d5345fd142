"""Operator replica pools on Ray: started, taken in and out of the rotation, autoscaled.

Each operator gets a small pool of long-lived actors that declare its resources, so models
load once per replica and GPU operators land on GPU nodes. A pool whose operator autoscales
grows and shrinks with its ongoing calls, as Serve scales a deployment
(:mod:`tilemore.engine.autoscale` decides; a thread here acts every
:data:`AUTOSCALE_PERIOD_S`). Calls themselves are :mod:`tilemore.engine.ray_backend`'s; it
records here the calls in flight that the autoscaler counts.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import ray
from ray import cloudpickle

from tilemore.engine import ray_private
from tilemore.engine.autoscale import ScalePolicy, autoscaling_for
from tilemore.engine.host import OperatorHost
from tilemore.engine.ray_replicas import Replicas
from tilemore.operator import Operator
from tilemore.registry import OPERATOR_GROUP, runtime_env_for
from tilemore.settings import Settings

LOST_REPLICA_RETRIES = 3
AUTOSCALE_PERIOD_S = 0.25  # Serve's control loop runs every 0.1 s; ours also lists calls
STALE_CALL_S = 60.0  # a finished call nobody fetched (its run was canceled) is forgotten
log = logging.getLogger(__name__)


@functools.cache
def installed_packages() -> frozenset[str]:
    """Top-level packages every node imports itself: tilemore, and each package whose
    operators come through entry points (installed on the nodes as tilemore is)."""
    return frozenset({"tilemore", *(ep.value.split(":")[0].split(".")[0]
                                    for ep in entry_points(group=OPERATOR_GROUP))})


def local_cpus(operators: Iterable[type[Operator]], replicas: int = 1, *,
               settings: Settings | None = None) -> int:
    """Logical CPUs for a one-machine cluster: every replica :func:`replica_counts` asks for
    fits (an autoscaled pool at its ``max_replicas``), and never fewer than the machine's
    cores. Actors hold their CPUs for life, while one image keeps only a few operators busy
    at a time, so this oversubscribes on purpose."""
    operators = list(operators)
    counts = replica_counts(operators, replicas)
    for op in counts if settings is not None else ():
        auto = autoscaling_for(op, settings)
        if auto is not None:
            counts[op] = max(Counter(operators)[op], auto.max_replicas)
    # a GPU operator's CPU fallback may hold more CPUs (whether the GPU is there is unknown
    # before Ray starts): count the larger
    declared = sum(max(op.resources.num_cpus, op.resources.cpus_without_gpu()) * n
                   for op, n in counts.items())
    return max(os.cpu_count() or 1, math.ceil(declared))


def replica_counts(operators: Iterable[type[Operator]], replicas: int) -> dict[type[Operator], int]:
    """Replicas per operator: ``replicas``, or more where one graph uses an operator in
    several tasks (two branches of the same denoiser must not queue behind one actor)."""
    return {op: max(replicas, n) for op, n in Counter(operators).items()}


def ship_by_value(operator: type[Operator]) -> None:
    """Operators from a customer's ``.py`` file or a test module are not importable on the
    workers; send their module's code along instead of a reference to it."""
    module = sys.modules.get(operator.__module__)
    top = operator.__module__.split(".")[0]
    if module is not None and top not in installed_packages():
        cloudpickle.register_pickle_by_value(module)


@dataclass(eq=False)
class Call:
    """A call in flight: where it may be running, and (autoscaled pools) its stats ref,
    ready once it is done there."""

    operator: type[Operator]
    replica: Any | None  # its replica; None for a fan-out over the whole pool
    actors: tuple[Any, ...]
    ref: ray.ObjectRef | None = None
    done_at: float | None = None


@dataclass(eq=False)
class _Scaling:
    """One autoscaled pool's policy, and replicas on their way in or out."""

    policy: ScalePolicy
    starting: dict[Any, Any] = field(default_factory=dict)  # ready() ref → new replica
    retiring: list[Any] = field(default_factory=list)  # out of the rotation, killed once idle


class RayPools:
    """Every operator's pool of replica actors; thread-safe (a conductor runs many graphs at
    once). ``lock`` is held by a caller from choosing a replica to :meth:`track`-ing its
    call, so the autoscaler never sees a replica it retired as idle while a call to it is
    on its way."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A pool's list and its Replicas are replaced, never changed in place, when it grows
        # or shrinks: a caller holding the old ones still indexes them consistently.
        self._pools: dict[type[Operator], list[Any]] = {}
        self._up: dict[type[Operator], Replicas] = {}
        self._calls: dict[str, Call] = {}  # stats ref's hex → the call
        self._scaling: dict[type[Operator], _Scaling] = {}
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._scaler: threading.Thread | None = None
        self._evacuated: dict[str, int] = {}  # actor id → its restart count when moved

    def pool(self, operator: type[Operator], size: int | None = None) -> list[Any]:
        """The operator's replicas, started up to ``size`` (at least ``settings.replicas``
        or an autoscaled pool's ``min_replicas``) where there are fewer."""
        with self.lock:
            pool = self._pools.get(operator, [])
            auto = autoscaling_for(operator, self.settings)
            wanted = max(size or 0, auto.min_replicas if auto else self.settings.replicas)
            if auto is not None:
                scaling = self._scaling.get(operator)
                if scaling is None:
                    scaling = self._scaling[operator] = _Scaling(ScalePolicy(auto))
                scaling.policy.floor = max(scaling.policy.floor, size or 0)
                wanted -= len(scaling.starting)
                self._start_scaler()
            if len(pool) < wanted or operator not in self._up:
                pool = [*pool, *self._start(operator, wanted - len(pool))]
                self._install(operator, pool)
            return pool

    def up(self, operator: type[Operator]) -> Replicas:
        """Which of the operator's replicas take calls (its pool started if need be)."""
        with self.lock:
            self.pool(operator)
            return self._up[operator]

    def _start(self, operator: type[Operator], n: int) -> list[Any]:
        if n <= 0:
            return []
        ship_by_value(operator)
        res = operator.resources
        gpus, cpus = res.num_gpus, res.num_cpus
        if gpus and res.gpu_optional and not ray.cluster_resources().get("GPU"):
            # no GPU anywhere: the operator's CPU fallback, with the CPUs it declares for it
            gpus, cpus = 0, res.cpus_without_gpu()
        # A replica that dies (its node lost) is restarted, on another node if need be.
        # Calls go to replicas that are up and fail fast with a lost one (then run again
        # on another); only when none is up does a call wait for a restart, which Ray's
        # task retries do (a call to a restarting actor would otherwise fail at once).
        # SPREAD: replicas of an operator on different nodes where they fit, so a lost node
        # takes one of them, not all (the calls then go to the others at once).
        # Out of order: a call is handed over before its inputs are ready (the graph runs as
        # a Ray DAG), and must not hold up calls behind it whose inputs are.
        actor_cls = ray.remote(OperatorHost).options(
            num_cpus=cpus, num_gpus=gpus, resources=dict(res.custom) or None,
            scheduling_strategy="SPREAD", allow_out_of_order_execution=True,
            max_restarts=-1, max_task_retries=LOST_REPLICA_RETRIES,
            runtime_env=runtime_env_for(operator),  # its module's REQUIREMENTS
        )
        return [actor_cls.remote(operator, self.settings, cpus) for _ in range(n)]

    def _install(self, operator: type[Operator], hosts: list[Any]) -> None:
        """Make ``hosts`` the pool; replicas set aside as lost stay set aside."""
        old = self._up.get(operator)
        up = Replicas(hosts)
        for i, when in dict(old.down if old else {}).items():
            if old is not None and old.hosts[i] in hosts:
                up.down[hosts.index(old.hosts[i])] = when
        self._pools[operator], self._up[operator] = hosts, up

    def ready_refs(self, operators: Iterable[type[Operator]]) -> list[ray.ObjectRef]:
        """Start the replicas these operators need (one per use in ``operators``); each ref
        is ready once its replica has run its ``setup``."""
        return [a.ready.remote() for op, n in Counter(operators).items()
                for a in self.pool(op, n)]

    def replicas(self, operator: type[Operator]) -> list[Any]:
        """The operator's actors (for operations and fault-injection tests)."""
        with self.lock:
            return list(self._pools.get(operator, []))

    def replica_states(self) -> dict[str, dict[str, int]]:
        """Operator → its replicas by state: taking calls (``up``), set aside after a loss
        (``down``), and, in autoscaled pools, ``starting`` and ``retiring``."""
        with self.lock:
            states = {}
            for operator, pool in self._pools.items():
                down = len(self._up[operator].down) if operator in self._up else 0
                scaling = self._scaling.get(operator)
                states[operator.name] = {
                    "up": len(pool) - down, "down": down,
                    "starting": len(scaling.starting) if scaling else 0,
                    "retiring": len(scaling.retiring) if scaling else 0}
            return states

    def evacuate(self, nodes: set[str]) -> int:
        """Restart the replicas that live on ``nodes`` (being drained): Ray places them on
        other nodes, and the tasks they were running fail there and retry. Returns how many
        moved."""
        with self.lock:
            pools = list(self._pools.values())
        on_nodes = []
        for pool in pools:
            for actor in pool:
                info = ray_private.actor_info(actor)  # the GCS's: no dashboard needed
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

    # -- the calls in flight ---------------------------------------------------------------

    def track(self, stats: ray.ObjectRef, call: Call) -> None:
        """Record a call just made (under :attr:`lock`). Only the autoscaler needs the ref
        (to see the call finish); elsewhere the hex alone, so nothing is pinned."""
        if call.operator in self._scaling:
            call.ref = stats
        self._calls[stats.hex()] = call

    def lost(self, handle: ray.ObjectRef) -> None:
        """The call behind ``handle`` failed with its replica: set that replica aside until
        it answers again."""
        with self.lock:
            call = self._calls.get(handle.hex())
            up = self._up.get(call.operator) if call is not None else None
        if call is not None and up is not None and call.replica in up.hosts:
            up.lost(up.hosts.index(call.replica))

    def forget(self, handle: ray.ObjectRef) -> None:
        """The call's result is here: the autoscaler stops counting it."""
        with self.lock:
            self._calls.pop(handle.hex(), None)

    # -- autoscaling ---------------------------------------------------------------------

    def _start_scaler(self) -> None:
        if self._scaler is None:
            self._scaler = threading.Thread(target=self._scale_forever, daemon=True,
                                            name="tilemore-autoscaler")
            self._scaler.start()

    def _scale_forever(self) -> None:
        while not self._stop.wait(AUTOSCALE_PERIOD_S):
            try:
                self.autoscale()
            except Exception:  # a bad round must not end autoscaling for good
                log.exception("autoscaling round failed")

    def autoscale(self, now: float | None = None) -> None:
        """One round: take in replicas that have started, kill retired ones now idle, and
        grow or shrink each autoscaled pool as its policy says."""
        now = time.monotonic() if now is None else now
        with self.lock:
            calls = [c for c in self._calls.values() if c.ref is not None]
            starting = [(op, ref) for op, sc in self._scaling.items() for ref in sc.starting]
        refs = [c.ref for c in calls] + [ref for _, ref in starting]
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0]
                   if refs else ())
        ongoing: Counter[type[Operator]] = Counter()
        busy: Counter[Any] = Counter()
        for c in calls:
            if c.ref not in done:
                ongoing[c.operator] += 1
                busy.update(c.actors)
            elif now - (c.done_at or now) > STALE_CALL_S:
                with self.lock:
                    self._calls.pop(c.ref.hex(), None)
            else:
                c.done_at = c.done_at or now
        for op, ref in starting:
            if ref in done:
                self._started(op, ref)
        for op, scaling in list(self._scaling.items()):
            # retired before this round's snapshot of the calls: idle means idle
            self._reap(scaling, busy)
            with self.lock:
                current = len(self._pools.get(op, ())) + len(scaling.starting)
            want = scaling.policy.decide(now, ongoing[op], current)
            if want > current:
                log.info("autoscaling %s: %d → %d replicas", op.name, current, want)
                new = self._start(op, want - current)
                with self.lock:
                    scaling.starting.update((a.ready.remote(), a) for a in new)
            elif want < current:
                log.info("autoscaling %s: %d → %d replicas", op.name, current, want)
                self._retire(op, scaling, current - want, busy)

    def _started(self, operator: type[Operator], ref: ray.ObjectRef) -> None:
        """A new replica ran its ``setup``: into the rotation (or away, if it failed)."""
        scaling = self._scaling[operator]
        with self.lock:
            actor = scaling.starting.pop(ref, None)
        if actor is None:
            return
        try:
            ray.get(ref)
        except Exception:  # its setup failed: try again only after another upscale delay
            log.exception("a new replica of %s did not start", operator.name)
            scaling.policy.reset()
            ray.kill(actor)
            return
        with self.lock:
            self._install(operator, [*self._pools[operator], actor])

    def _retire(self, operator: type[Operator], scaling: _Scaling, n: int,
                busy: Counter[Any]) -> None:
        """Take ``n`` replicas out: those still starting first, then lost ones, then the
        idlest. They leave the rotation now and are killed once their calls are done."""
        with self.lock:
            doomed = list(scaling.starting.items())[::-1][:n]
            for ref, _ in doomed:
                del scaling.starting[ref]
            n -= len(doomed)
            hosts, up = self._pools[operator], self._up[operator]
            order = sorted(range(len(hosts)), key=lambda i: (i not in up.down, busy[hosts[i]], -i))
            leaving = [hosts[i] for i in order[:max(n, 0)]]
            if leaving:
                scaling.retiring.extend(leaving)
                self._install(operator, [h for h in hosts if h not in leaving])
        for _, actor in doomed:
            ray.kill(actor)

    def _reap(self, scaling: _Scaling, busy: Counter[Any]) -> None:
        with self.lock:
            idle = [a for a in scaling.retiring if not busy[a]]
            scaling.retiring = [a for a in scaling.retiring if busy[a]]
        for actor in idle:
            ray.kill(actor)

    def close(self) -> None:
        """Stop autoscaling and kill every replica (a later call starts pools afresh)."""
        self._stop.set()
        if self._scaler is not None:
            self._scaler.join()
        with self.lock:
            actors = [a for pool in self._pools.values() for a in pool]
            for scaling in self._scaling.values():
                actors += [*scaling.starting.values(), *scaling.retiring]
            self._pools.clear()
            self._up.clear()
            self._scaling.clear()
            self._calls.clear()
        for actor in actors:
            ray.kill(actor)
        self._scaler, self._stop = None, threading.Event()
