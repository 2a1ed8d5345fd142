"""The one batch module that talks to Ray: a Ray Data pipeline over the batch's items.

``from_items`` (names only) → ``map_batches`` over an actor pool of :class:`GraphUDF`, each
holding every operator of the graph once (loaded at start, like a replica) and running whole
images through it → rows of small outcomes, a block at a time, for the progress bar. Bytes never
pass through the driver: each worker reads its input and writes its output itself.

Why one stage for the whole graph rather than a ``map_batches`` per task: measured on 2
cores with the ``denoised`` pipeline (60 images of 256×192), one stage per task took 2.8× as
long — every hop serialises the image into the object store, the per-task pools split the CPUs
eight ways, and the slowest stage bounds the rest — while one stage keeps pace with a
hand-written multiprocessing pool once its workers are up (``benchmarks/batch.py``). Branches
still run in parallel (threads of the worker) and QC still picks.

Charges go to one billing actor beside the driver (the SQLite ledger is a file on this machine),
the single writer of the ledger for this batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tilemore.batch.charges import BatchBilling, Bill
from tilemore.batch.plan import Item
from tilemore.batch.worker import BatchSpec, ImageWorker, Outcome
from tilemore.engine.ray_backend import get_unwrapped, ship_by_value
from tilemore.errors import TilemoreError
from tilemore.operator import Operator
from tilemore.settings import Settings

MAX_PER_BLOCK = 8  # images one Ray Data task takes at most (see blocks())
BLOCKS_PER_WORKER = 16
MAX_BLOCKS = 100_000
# What boto3 reads its credentials and region from; the workers get the driver's (on a
# cluster with instance roles, none are set and none travel).
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


@dataclass(frozen=True)
class WorkerResources:
    num_cpus: float
    num_gpus: float
    custom: dict[str, float]


def worker_resources(operators: Iterable[type[Operator]],
                     cluster: Mapping[str, float]) -> WorkerResources:
    """One worker runs every task of an image, one after another or in parallel branches: it
    claims the largest claim of its operators (CPUs, GPUs, custom resources). A GPU operator
    that may fall back to CPU claims no GPU on a cluster without one."""
    cpus, gpus, custom = 0.0, 0.0, {}
    for op in operators:
        res = op.resources
        cpus = max(cpus, res.num_cpus)
        want = res.num_gpus if not (res.gpu_optional and not cluster.get("GPU")) else 0.0
        if want and not cluster.get("GPU"):
            raise TilemoreError(f"operator '{op.name}' needs a GPU and the Ray cluster has "
                                "none", code="no_gpu")
        gpus = max(gpus, want)
        for name, amount in res.custom.items():
            custom[name] = max(custom.get(name, 0.0), amount)
    return WorkerResources(cpus or 1.0, gpus, custom)


def blocks(images: int, workers: int) -> int:
    """How many blocks (Ray Data tasks) to cut the images into. A block costs the driver,
    Ray Data's own actors and the worker milliseconds of CPU, and two round trips to the
    billing actor, much against a small image's 0.1-0.3 s: several images to a block, while
    keeping ``BLOCKS_PER_WORKER`` blocks per worker so that the last ones leave no worker idle
    for long. Outcomes (the progress bar) arrive a block at a time."""
    per_block = max(1, min(MAX_PER_BLOCK, images // (workers * BLOCKS_PER_WORKER)),
                    math.ceil(images / MAX_BLOCKS))
    return math.ceil(images / per_block)


def pool_size(res: WorkerResources, free: Mapping[str, float], items: int) -> int:
    """How many workers fit in the cluster's free resources, never more than the images."""
    fits = [math.floor(free.get("CPU", 0.0) / res.num_cpus)] if res.num_cpus else []
    if res.num_gpus:
        fits.append(math.floor(free.get("GPU", 0.0) / res.num_gpus))
    fits += [math.floor(free.get(k, 0.0) / v) for k, v in res.custom.items() if v]
    return max(1, min([items, *fits]))


@ray.remote(num_cpus=0, max_concurrency=32)
class BillingActor:
    """This batch's ledger writer; calls from many workers are committed in groups."""

    def __init__(self, settings: Settings) -> None:
        self.billing = BatchBilling(settings)

    def reserve(self, account: str, holds: list[tuple[str, Decimal]]
                ) -> list[TilemoreError | None]:
        return self.billing.reserve(account, holds)

    def settle(self, account: str, traced_for: str | None, bills: list[Bill]
               ) -> list[Decimal | TilemoreError]:
        return self.billing.settle(account, traced_for, bills)

    def close(self) -> None:
        self.billing.close()


class RemoteCharger:
    """A :class:`~tilemore.batch.charges.Charger` over the billing actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def reserve(self, account: str, holds: list[tuple[str, Decimal]]
                ) -> list[TilemoreError | None]:
        return get_unwrapped(self.handle.reserve.remote(account, holds)) if holds else []

    def settle(self, account: str, traced_for: str | None, bills: list[Bill]
               ) -> list[Decimal | TilemoreError]:
        return get_unwrapped(self.handle.settle.remote(account, traced_for, bills))


class GraphUDF:
    """The ``map_batches`` class: one long-lived :class:`ImageWorker` per actor, given a
    block of images at a time."""

    def __init__(self, spec: BatchSpec, billing: Any) -> None:
        self.worker = ImageWorker(spec, RemoteCharger(billing))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        items = [Item(str(name), str(output))
                 for name, output in zip(batch["name"], batch["output"], strict=True)]
        return {"outcome": [json.dumps(o.to_dict()) for o in self.worker.process(items)]}


def run_on_ray(spec: BatchSpec, items: list[Item], on_outcome: Callable[[Outcome], None],
               workers: int | None = None) -> int:
    """Run ``items`` through ``spec``'s graph on the connected Ray cluster, calling
    ``on_outcome`` as each image finishes; returns the number of workers used."""
    operators = [t.operator for t in spec.graph.tasks]
    res = worker_resources(operators, ray.cluster_resources())
    size = workers or pool_size(res, ray.available_resources(), len(items))
    for op in operators:
        ship_by_value(op)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    billing = BillingActor.options(scheduling_strategy=here).remote(spec.settings)
    try:
        with _data_context():
            ds = ray.data.from_items([{"name": i.name, "output": i.output} for i in items],
                                     override_num_blocks=blocks(len(items), size))
            ds = ds.map_batches(
                GraphUDF, batch_size=None, compute=ray.data.ActorPoolStrategy(size=size),
                fn_constructor_kwargs={"spec": spec, "billing": billing},
                num_cpus=res.num_cpus, num_gpus=res.num_gpus or None,
                resources=res.custom or None, runtime_env=_runtime_env(spec))
            seen: set[str] = set()
            for row in ds.iter_rows():
                outcome = Outcome.from_dict(json.loads(row["outcome"]))
                seen.add(outcome.name)
                on_outcome(outcome)
        for item in items:  # its block was given up (see _data_context)
            if item.name not in seen:
                on_outcome(Outcome(item.name, item.output, "failed", "worker_lost",
                                   "Ray gave up on the worker processing it (out of memory, "
                                   "or a crash in native code)"))
        get_unwrapped(billing.close.remote())
    finally:
        ray.kill(billing)
    return size


def _runtime_env(spec: BatchSpec) -> dict[str, Any] | None:
    if not any(loc.uri().startswith("s3://") for loc in (spec.source, spec.dest)):
        return None
    env = {k: os.environ[k] for k in AWS_VARIABLES if os.environ.get(k)}
    return {"env_vars": env} if env else None


@contextmanager
def _data_context():
    """No Ray Data progress bars or start-up lines (the CLI draws its own bar), and a block
    Ray gives up on is dropped rather than failing the batch: a worker returns every failure
    of its own as an outcome, so only a worker that could not be brought back loses images
    (reported as ``worker_lost``)."""
    ctx = ray.data.DataContext.get_current()
    fields = ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")
    saved = {f: getattr(ctx, f) for f in fields}
    logger = logging.getLogger("ray.data")
    level = logger.level
    for f, value in zip(fields, (False, False, -1), strict=True):
        setattr(ctx, f, value)
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for f, value in saved.items():
            setattr(ctx, f, value)
        logger.setLevel(level)
