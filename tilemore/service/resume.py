"""What a run of a thread starts from, read from its record: its graph in the pipeline
version it was accepted under, the tasks an earlier run finished that need not run again, the
branches a selector ruled out, and its input.

A thread picked up again (after its conductor, a worker or the whole service died) starts
from here: it skips the finished tasks and reloads their outputs from their checkpoints. A
finished task with no checkpoint (too cheap to be worth one, see
:mod:`tilemore.engine.checkpoint_policy`, or one whose checkpoint went) runs again only when
a task still to run reads its output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tilemore.blobs import BlobNotFound, BlobStore
from tilemore.catalog import Catalog
from tilemore.engine import checkpoint
from tilemore.engine.host import TaskStats
from tilemore.operator import Selection
from tilemore.pipeline.graph import FromTask, Picked, TaskGraph, build_graph
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
    """Where a run of ``rec`` starts (blocking: on an I/O thread). A task that runs again is
    not charged again; the input is not read when nothing is left to run or the thread is
    canceled."""
    ids = {t.id for t in graph.tasks}
    skipped = {t.task_id: t.note or "" for t in rec.tasks  # ruled out by a selector
               if t.status == "skipped" and t.task_id in ids}
    finished = {t.task_id: t for t in rec.tasks if t.status == "done" and t.task_id in ids}
    stored = {tid for tid, t in finished.items()
              if t.checkpoint_key and blobs.exists(t.checkpoint_key)}
    verdicts = {tid: _verdict(blobs, finished[tid].checkpoint_key) for tid in stored
                if graph.task(tid).operator.role == "selector"}
    stored -= {tid for tid, verdict in verdicts.items() if verdict is None}  # runs again
    again = _to_run(graph, set(finished), stored, set(skipped), verdicts)
    completed = {tid: _completed(t, reload, verdicts.get(tid))
                 for tid, t in finished.items() if tid not in again}
    if rec.cancel_requested or len(ids) == len(completed) + len(skipped):
        return Start(graph, completed, skipped, b"")
    try:
        return Start(graph, completed, skipped, blobs.get(rec.input_key))
    except BlobNotFound as exc:  # lost (expired, deleted): no retry brings it back
        return Start(graph, completed, skipped, exc)


def _to_run(graph: TaskGraph, finished: set[str], stored: set[str], skipped: set[str],
            verdicts: dict[str, Selection | None]) -> set[str]:
    """The tasks to run: the unfinished ones, the output and the selectors (their verdicts
    are the thread's QC record) that have no checkpoint, and every finished one without a
    checkpoint that one of those reads (its output went with the run that made it). The
    stage after a stored selector reads only the candidate picked."""
    todo = {t.id for t in graph.tasks if t.id not in skipped and (
        t.id not in finished or t.id not in stored
        and (t.id == graph.output or t.operator.role == "selector"))}
    stack = list(todo)
    while stack:
        for inp in graph.task(stack.pop()).inputs:
            if isinstance(inp, FromTask) and inp.task not in skipped:
                reads = [inp.task]
            elif isinstance(inp, Picked) and (verdict := verdicts.get(inp.selector)):
                live = [c for c in graph.candidates(inp.selector) if c not in skipped]
                reads = [live[verdict.pick]] if 0 <= verdict.pick < len(live) else live
            elif isinstance(inp, Picked):
                reads = [inp.selector]
            else:
                continue
            for tid in reads:
                if tid not in stored and tid not in todo:
                    todo.add(tid)
                    stack.append(tid)
    return todo


def _verdict(blobs: BlobStore, key: str | None) -> Selection | None:
    """A stored selector's verdict (a few bytes), or None when it cannot be read back: the
    selector then runs again."""
    try:
        verdict = checkpoint.load(blobs.get(key)) if key else None
    except (BlobNotFound, ValueError):
        return None
    return verdict if isinstance(verdict, Selection) else None


def task_stats(t: TaskRecord) -> TaskStats:
    """A task an earlier run finished, as the graph runner and the charger see it."""
    return TaskStats(t.task_id, t.operator, t.started_at or 0.0, t.finished_at or 0.0,
                     t.megapixels or 0.0, "", 0, None, t.checkpoint_key)


def _completed(t: TaskRecord, reload: Reload, verdict: Selection | None) -> Completed:
    """A task that need not run again. One without a checkpoint is read by no task still to
    run (:func:`_to_run`), so its output is never asked for."""
    key = t.checkpoint_key
    if verdict is not None:
        return Completed(task_stats(t), lambda: verdict)
    if key is None:
        return Completed(task_stats(t), lambda: _not_stored(t.task_id))
    return Completed(task_stats(t), lambda: reload(key))


def _not_stored(task_id: str) -> object:
    raise RuntimeError(f"task {task_id} kept no checkpoint, and nothing should read it")
