"""The one module that talks to Ray: operator actors, object refs, start-up.

Each operator gets a small pool of long-lived actors that declare its resources, so models
load once per replica and GPU operators land on GPU nodes. Task inputs are ObjectRefs: Ray
moves arrays between workers through the object store, never through the conductor.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import ray
from ray import cloudpickle
from ray.exceptions import RayTaskError

from tilemore.engine.host import OperatorHost, TaskFailure, TaskStats
from tilemore.errors import TilemoreError
from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams
from tilemore.settings import Settings
from tilemore.tiling import Tile, plan_tiles, stitch_exact, stitch_feathered

_INSTALLED_PACKAGES = ("tilemore", "tilemore_operators")


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
        self._turn: dict[type[Operator], itertools.cycle] = {}

    def _pool(self, operator: type[Operator], size: int | None = None) -> list[Any]:
        pool = self._pools.setdefault(operator, [])
        wanted = max(size or 0, self.settings.replicas)
        if len(pool) < wanted:
            _ship_by_value(operator)
            res = operator.resources
            gpus = res.num_gpus
            if gpus and res.gpu_optional and not ray.cluster_resources().get("GPU"):
                gpus = 0  # no GPU anywhere: the operator's CPU fallback
            actor_cls = ray.remote(OperatorHost).options(
                num_cpus=res.num_cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
            )
            pool.extend(actor_cls.remote(operator, self.settings)
                        for _ in range(wanted - len(pool)))
            self._turn[operator] = itertools.cycle(range(len(pool)))
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

    def put(self, value: Any) -> ray.ObjectRef:
        return ray.put(value)

    def call(
        self, task_id: str, operator: type[Operator], params: OperatorParams,
        inputs: Sequence[ray.ObjectRef],
    ) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        pool = self._pool(operator)
        if operator.tiling is not None and len(pool) > 1 and len(inputs) == 1:
            # Tiles across every replica at once, rather than the whole image on one.
            return _fan_out.options(num_returns=2).remote(
                pool, task_id, operator.name, params, operator.tiling == "exact",
                operator.halo, inputs[0])
        actor = pool[next(self._turn[operator])]
        output, stats = actor.run.options(num_returns=2).remote(task_id, params, *inputs)
        return output, stats

    def wait(self, handles: Sequence[ray.ObjectRef], timeout: float | None = None) -> list:
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:  # take everything else that is already done, too
            ready, _ = ray.wait(list(handles), num_returns=len(handles), timeout=0)
        return ready

    def get(self, handle: ray.ObjectRef) -> Any:
        return self._get(handle)

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


def _ship_by_value(operator: type[Operator]) -> None:
    """Operators from a customer's ``.py`` file or a test module are not importable on the
    workers; send their module's code along instead of a reference to it."""
    module = sys.modules.get(operator.__module__)
    top = operator.__module__.split(".")[0]
    if module is not None and top not in _INSTALLED_PACKAGES:
        cloudpickle.register_pickle_by_value(module)


@ray.remote(num_cpus=0)
def _fan_out(hosts: list[Any], task_id: str, operator_name: str, params: OperatorParams,
             exact: bool, halo: int, image: Image) -> tuple[Any, TaskStats]:
    """One task split into tiles across every replica of its operator, several in flight at
    once, stitched as they come back. Failures come back as data, like a replica's."""
    started = time.time()
    try:
        side = ray.get(hosts[0].tile_side.remote())
        h, w = image.height, image.width
        tiles = plan_tiles(h, w, side, halo)
        in_flight: dict[Any, Tile] = {}
        done: list[tuple[Tile, Any]] = []
        queue = list(tiles)
        turn = 0
        while queue or in_flight:
            while queue and len(in_flight) < 2 * len(hosts):  # bounded: memory stays flat
                t = queue.pop(0)
                window = np.ascontiguousarray(image.pixels[t.wy0:t.wy1, t.wx0:t.wx1])
                in_flight[hosts[turn % len(hosts)].run_window.remote(params, window)] = t
                turn += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                done.append((in_flight.pop(ref), ray.get(ref)))
        if exact:
            pixels = stitch_exact(h, w, image.pixels.shape[2], image.pixels.dtype, iter(done))
        else:
            pixels = np.clip(np.rint(stitch_feathered(h, w, image.pixels.shape[2], iter(done))),
                             0, 255).astype(np.uint8)
        output = image.with_pixels(pixels)
        key = ray.get(hosts[0].checkpoint.remote(output))
        failure = None
    except Exception as exc:  # noqa: BLE001 - reported through the stats, as replicas do
        output, key = None, None
        failure = TaskFailure(exc if isinstance(exc, TilemoreError) else RuntimeError(repr(exc)),
                              traceback.format_exc())
    stats = TaskStats(task_id, operator_name, started, time.time(), image.megapixels,
                      socket.gethostname(), os.getpid(), failure, key)
    return output, stats
