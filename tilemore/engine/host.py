"""What a replica does, with no Ray in sight: hold one operator and run tasks on it.

:class:`OperatorHost` is what a Ray actor wraps (``ray.remote(OperatorHost)``) and what the
in-process backend calls directly, so both run exactly the same code.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

from tilemore.blobs import open_blob_store
from tilemore.engine import checkpoint
from tilemore.engine.checkpoint_policy import CheckpointPolicy, raw_bytes
from tilemore.engine.memory import return_large_buffers_to_the_os
from tilemore.image import Encoded, Image
from tilemore.operator import Operator, OperatorContext, OperatorParams, Selection
from tilemore.settings import Settings


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Why a task failed. Returned, not raised, so the backend holds no unread error objects
    and the conductor decides what a failure means for the thread."""

    error: BaseException
    traceback: str


@dataclass(frozen=True, slots=True)
class TaskStats:
    """How one task went; small, so the conductor fetches it while outputs stay put."""

    task_id: str
    operator: str
    started: float  # time.time() on the worker
    finished: float
    megapixels: float  # of the task's main input
    host: str
    pid: int
    failure: TaskFailure | None = None
    checkpoint: str | None = None  # blob key of the stored output, when checkpointing
    tiles: int = 0  # tiles the backend split the task into; 0: run whole on one replica
    checkpoint_bytes: int = 0  # its size in the blob store (0: unknown)
    selection: Selection | None = None  # a selector's verdict; its output is the pick

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class OperatorHost:
    """One long-lived replica of an operator: ``setup`` once, then ``run`` per task."""

    def __init__(self, operator: type[Operator], settings: Settings | None = None,
                 cpus: float | None = None) -> None:
        """``cpus``: what the replica holds (the Ray backend passes what its actor was
        given), for the operator's ``context.cpus``."""
        settings = settings or Settings()
        return_large_buffers_to_the_os()
        self.operator = operator()
        self.operator.context = OperatorContext.for_operator(operator, settings, cpus)
        self.operator.setup()
        self.blobs = open_blob_store(settings.blobs) if settings.checkpoint_tasks else None
        self.policy = CheckpointPolicy.of(settings)

    def ready(self) -> str:
        return self.operator.name

    def tile_side(self) -> int:
        return self.operator.tile_side()

    def plan(self, params: OperatorParams, original: Any,
             branches: list[str]) -> dict[str, Any] | None:
        """A selector's look at its stage's input (see :meth:`Operator.plan`), with the
        input's size, so that what a skipped branch would have cost can be priced."""
        verdict = self.operator.plan(params, original, branches)
        if verdict is None:
            return None
        size = (original.width, original.height) if isinstance(original, Image) else None
        return {**verdict, "size": size}

    def run_window(self, params: OperatorParams, pixels: Any) -> Any:
        """One tile of a task split across replicas: pixels in, pixels out."""
        return self.operator.process(params, Image(pixels)).pixels

    def checkpoint(self, output: Any, run_seconds: float,
                   selection: Selection | None = None) -> tuple[str | None, int]:
        """Stores a finished task's output (a selector's: its verdict) when the policy finds
        it worth it; its key and stored size, or ``(None, 0)``. Stored here, beside the data,
        so that a finished task survives the loss of this replica, the conductor or the
        whole cluster."""
        value = selection if selection is not None else output
        if self.blobs is None or not self.policy.worth_storing(
                run_seconds, value, verdict=selection is not None):
            return None, 0
        started = time.perf_counter()
        data = checkpoint.dump(value)
        key = self.blobs.put(data)
        self.policy.cost.observed(raw_bytes(value), time.perf_counter() - started)
        return key, len(data)

    def run(self, task_id: str, params: OperatorParams, *inputs: Any) -> tuple[Any, TaskStats]:
        started = time.time()
        failure, selection = None, None
        try:
            output = self.operator.process(params, *inputs)
            if self.operator.role == "selector":
                selection, output = output, _picked(output, inputs)
        except Exception as exc:  # noqa: BLE001 - reported to the conductor through the stats
            output, failure = None, TaskFailure(_picklable(exc), traceback.format_exc())
        finished = time.time()
        # A selector's checkpoint is its verdict: the picked image is its candidate's.
        key, size = (None, 0) if failure else self.checkpoint(output, finished - started,
                                                               selection)
        stats = TaskStats(task_id, self.operator.name, started, finished,
                          _megapixels(inputs) or _megapixels((output,)), socket.gethostname(),
                          os.getpid(), failure, key, checkpoint_bytes=size, selection=selection)
        return output, stats


def _picked(verdict: Any, inputs: tuple[Any, ...]) -> Any:
    """The candidate a selector's verdict picks, which the selector hands on: the next stage
    then starts on it where the selector ran, with no round trip through the conductor. The
    candidates are the last inputs, one per score."""
    if (not isinstance(verdict, Selection) or not 0 < len(verdict.scores) <= len(inputs)
            or not 0 <= verdict.pick < len(verdict.scores)):
        raise TypeError(f"a selector must return a Selection with one score per candidate "
                        f"and a pick among them, got {verdict!r}")
    return inputs[len(inputs) - len(verdict.scores) + verdict.pick]


def _megapixels(inputs: tuple[Any, ...]) -> float:
    for value in inputs:
        if isinstance(value, (Image, Encoded)):
            return value.width * value.height / 1e6
    return 0.0


def _picklable(exc: Exception) -> Exception:
    """The exception itself when it survives pickling (Ray must move it), else its words."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
