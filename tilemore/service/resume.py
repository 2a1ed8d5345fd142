"""What a run of a thread starts from, read from its record: its graph in the pipeline
version it was accepted under, the tasks an earlier run finished whose checkpoints are still
stored, the branches a selector ruled out, and its input.

A thread picked up again (after its conductor, a worker or the whole service died) starts
from here: it skips the finished tasks and reloads their outputs from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tilemore.blobs import BlobNotFound, BlobStore
from tilemore.catalog import Catalog
from tilemore.engine.host import TaskStats
from tilemore.pipeline.graph import TaskGraph, build_graph
from tilemore.pipeline.run import Completed
from tilemore.store import TaskRecord, ThreadRecord, ThreadRepository

Reload = Callable[[str], Awaitable[object]]  # a checkpoint's key → its output, read back


@dataclass(frozen=True)
class Start:
    graph: TaskGraph
    completed: dict[str, Completed]  # task id → a finished task, its output reloadable
    skipped: dict[str, str]  # task id → why a selector ruled it out
    data: bytes | BlobNotFound  # the input (b"" when nothing is left to run), or why it went


def thread_graph(catalog: Catalog, threads: ThreadRepository, rec: ThreadRecord) -> TaskGraph:
    """The thread's graph, in the pipeline version it was accepted under: kept when a newer
    one was deployed (its checkpoints were made by those operators, and mixing versions
    would give a result neither gives)."""
    pipeline = catalog.version(rec.pipeline, rec.fingerprint, threads)
    return build_graph(pipeline, rec.envelope["adjustments"], rec.output_format)


def start_of(rec: ThreadRecord, graph: TaskGraph, blobs: BlobStore, reload: Reload) -> Start:
    """Where a run of ``rec`` starts (blocking: on an I/O thread). A finished task whose
    checkpoint went (expired, a store that lost it) runs again, and is not charged again;
    the input is not read when nothing is left to run or the thread is canceled."""
    ids = {t.id for t in graph.tasks}
    completed = {t.task_id: _completed(t, reload) for t in rec.tasks
                 if t.status == "done" and t.checkpoint_key and t.task_id in ids
                 and blobs.exists(t.checkpoint_key)}
    skipped = {t.task_id: t.note or "" for t in rec.tasks  # ruled out by a selector
               if t.status == "skipped" and t.task_id in ids}
    if rec.cancel_requested or len(ids) == len(completed) + len(skipped):
        return Start(graph, completed, skipped, b"")
    try:
        return Start(graph, completed, skipped, blobs.get(rec.input_key))
    except BlobNotFound as exc:  # lost (expired, deleted): no retry brings it back
        return Start(graph, completed, skipped, exc)


def task_stats(t: TaskRecord) -> TaskStats:
    """A task an earlier run finished, as the graph runner and the charger see it."""
    return TaskStats(t.task_id, t.operator, t.started_at or 0.0, t.finished_at or 0.0,
                     t.megapixels or 0.0, "", 0, None, t.checkpoint_key)


def _completed(t: TaskRecord, reload: Reload) -> Completed:
    key = t.checkpoint_key
    assert key is not None
    return Completed(task_stats(t), lambda: reload(key))
