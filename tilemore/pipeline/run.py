"""Phase 4: run a task graph on a backend, as soon as each task's inputs allow.

A task is handed to the backend as soon as the tasks it reads are *handed on*, not finished:
it gets their output handles (Ray ObjectRefs, futures) and the backend starts it once they are
ready, with no round trip through here between stages. Parallel branches run together; the
data itself stays in the backend. The backend never runs a task on a failed input (Ray passes
the error on instead), and what was handed on past a failed task is taken back and handed
again after the failed one's retry; a task's result is judged only after its inputs', so
progress is always reported in the graph's order. A selector hands on the candidate it picked
(its output is that image), so QC's choice stays inside the graph too: the next stage is
handed the selector's output like any other. Its verdict comes back here with its stats, as
an event for the record.

A selector that can judge the stage's input first (its operator's ``plan``) is asked before
the branches start; a branch it finds unable to help is skipped: never run, never charged,
and the selector chooses among the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tilemore.engine.backend import Backend, ReplicaLost
from tilemore.engine.host import TaskFailure, TaskStats
from tilemore.errors import TilemoreError
from tilemore.image import Encoded
from tilemore.operator import Selection
from tilemore.pipeline.graph import FromTask, Input, Picked, Source, TaskGraph, TaskNode
from tilemore.pipeline.plans import BranchPlan, Plans, plan_of

log = logging.getLogger("tilemore.run")


class TaskFailed(Exception):
    """A task raised. ``error`` is its own exception (a :class:`TilemoreError` for bad input
    or configuration); ``traceback`` is where it was raised, on the worker."""

    def __init__(self, task: TaskNode, failure: TaskFailure, attempts: int = 1) -> None:
        runs = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"task '{task.id}' ({task.operator.name}) failed{runs}: "
                         f"{failure.error}")
        self.task_id, self.operator = task.id, task.operator.name
        self.error, self.traceback = failure.error, failure.traceback
        self.attempts = attempts

    @property
    def expected(self) -> bool:
        """True for bad input or configuration, which no retry would fix."""
        return isinstance(self.error, TilemoreError)


@dataclass(frozen=True)
class QCReport:
    """A selector's verdict, by branch name."""

    stage: str
    algorithm: str
    pick: str
    scores: dict[str, float]
    details: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # branch → why it did not run
    plan: dict[str, Any] = field(default_factory=dict)  # the selector's look at the input


@dataclass
class RunResult:
    output: Encoded
    stats: dict[str, TaskStats]
    qc: list[QCReport]
    seconds: float  # wall time from submission to the output being ready
    handles: dict[str, Any] = field(default_factory=dict)  # task id → output, in the backend


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    task: TaskStats
    inputs_ready: float | None = None  # when its last input finished (its wait began)


@dataclass(frozen=True)
class Completed:
    """A task finished in an earlier attempt: its stats and a way to load its output (from a
    checkpoint), called only if a task still to run needs it."""

    stats: TaskStats
    load: Callable[[], Any]


@dataclass(frozen=True)
class Retry:
    """A task failed and will run again after ``delay`` seconds (its policy allows it)."""

    task: TaskNode
    failures: int
    failure: TaskFailure
    delay: float


MAX_LOSSES = 10  # a task's runs lost with their replica before the thread gives up
DISCARD_SECONDS = 1.0  # how long a run waits, at its end, for what it handed on in vain


class RunCanceled(Exception):
    """``should_stop`` said so: nothing more was started."""


def run_graph(graph: TaskGraph, data: bytes, backend: Backend,
              on_progress: Callable[[Progress], None] | None = None, **options: Any) -> RunResult:
    """:func:`run_graph_async` from synchronous code (the CLI, batch mode, tests): its own
    event loop for the one run."""
    return asyncio.run(run_graph_async(graph, data, backend, on_progress, **options))


async def run_graph_async(
    graph: TaskGraph,
    data: bytes,
    backend: Backend,
    on_progress: Callable[[Progress], Any] | None = None,
    *,
    completed: Mapping[str, Completed] | None = None,
    on_start: Callable[[list[TaskNode]], Any] | None = None,
    should_stop: Callable[[], Any] | None = None,
    on_retry: Callable[[Retry], Any] | None = None,
    reload: Callable[[TaskStats], Any] | None = None,
    skipped: Mapping[str, str] | None = None,
    on_plan: Callable[[BranchPlan], Any] | None = None,
    poll_seconds: float = 0.5,
) -> RunResult:
    """Run ``graph`` on ``data``, waiting on the event loop: one loop runs many graphs (a
    conductor's threads), with no OS thread per run. Each callback, and ``Completed.load``,
    may be a plain function or a coroutine function: whatever blocks (a registry write, a
    blob read) belongs in one that hands it to a thread.

    Tasks in ``completed`` are not run again; ``on_start`` hears the tasks handed over together
    (one call per step, so they are recorded in one write), ``on_progress`` every task that
    finished (in the graph's order); ``should_stop`` is asked between steps, and stops the run
    before anything else starts. A failed task runs again as its retry policy says (``on_retry``
    hears of it); one out of retries raises :class:`TaskFailed`. A run lost with its replica
    (:class:`ReplicaLost`) runs again at once, outside the policy, up to :data:`MAX_LOSSES`
    times. ``reload`` brings a finished task's output back from its checkpoint: before a retry,
    the failed task's inputs are put again from there, in case the failure was an input lost
    with the node that held it. ``skipped``: branches an earlier attempt's selector ruled out
    (task id → why); branches ruled out now are announced to ``on_plan`` before the others
    start."""
    started = time.perf_counter()
    ready_when = _Readiness(backend)
    done = dict(completed or {})
    outputs: dict[str, Any] = {}  # task id → output handle; "" is the submitted data
    running: dict[Any, TaskNode] = {}  # stats handle → task
    selections: dict[str, Selection] = {}
    stats: dict[str, TaskStats] = {tid: c.stats for tid, c in done.items()}
    plans = Plans(graph, dict(skipped or {}), done, can_plan=hasattr(backend, "plan"))
    for task in graph.tasks:
        if task.id in done and task.operator.role == "selector":
            selections[task.id] = _checked(await _value(done[task.id].load()), task,
                                           len(plans.live(task.id)))
    waiting = [t for t in graph.tasks if t.id not in done and t.id not in plans.skipped]
    planning: dict[Any, TaskNode] = {}  # plan handle → its selector
    finished_early: dict[Any, TaskNode] = {}  # stats handle → a task done before its inputs
    abandoned: dict[Any, Any] = {}  # stats handle → output handle of runs taken back
    order = {t.id: i for i, t in enumerate(graph.tasks)}
    failures: dict[str, int] = {}  # counted against the task's retry policy
    losses: dict[str, int] = {}  # runs lost with a replica: not the operator's doing
    not_before: dict[str, float] = {}  # task id → monotonic time its retry may start

    async def output_of(task_id: str) -> Any:
        if task_id not in outputs:  # finished earlier: bring its checkpoint back
            outputs[task_id] = backend.put(await _value(done[task_id].load()))
        return outputs[task_id]

    async def resolve(inp: Input) -> Any | None:
        if isinstance(inp, Source):
            if "" not in outputs:
                outputs[""] = backend.put(data)
            return outputs[""]
        if isinstance(inp, FromTask):  # handed on already: the backend waits for it
            return await output_of(inp.task) if inp.task in stats else outputs.get(inp.task)
        assert isinstance(inp, Picked)
        if inp.selector in outputs or inp.selector not in selections:
            return outputs.get(inp.selector)  # the picked image, once the selector is handed on
        # Decided, and its output is not here: an earlier run's, or a pick run again
        picked = plans.live(inp.selector)[selections[inp.selector].pick]
        out = await output_of(picked) if picked in stats else outputs.get(picked)
        if out is not None:
            outputs[inp.selector] = out
        return out

    def inputs_of(task: TaskNode) -> tuple[Input, ...]:
        return tuple(i for i in task.inputs
                     if not (isinstance(i, FromTask) and i.task in plans.skipped))

    def take_back(failed: TaskNode) -> None:
        """Tasks handed on past ``failed`` (directly or further down) got its failure as
        input: forget them, to be handed again once it has run again."""
        gone = {failed.id}
        while True:
            later = [(h, t) for table in (running, finished_early) for h, t in table.items()
                     if gone & set(_input_tasks(t, selections, plans))]
            if not later:
                return
            for handle, task in later:
                running.pop(handle, None)
                finished_early.pop(handle, None)
                abandoned[handle] = outputs.pop(task.id, None)
                gone.add(task.id)
                waiting.append(task)

    async def restore_inputs(task: TaskNode, lost: bool) -> None:
        """Before ``task`` runs again: its failure may be an input lost with the node that
        held it, so each input is put again from its checkpoint. After a loss, one with no
        checkpoint (too cheap to store) runs again itself."""
        put_again: dict[str, Any] = {}  # held → its output, put once
        for dep in _input_tasks(task, selections, plans):
            held = _held_by(dep, selections, plans)  # a selector's: its pick's
            if held not in stats:  # running again already
                continue
            if reload is not None and stats[held].checkpoint:
                if held not in put_again:
                    put_again[held] = backend.put(await _value(reload(stats[held])))
                outputs[dep] = put_again[held]
            elif lost and not stats[held].checkpoint and held not in done:
                del stats[held]
                outputs.pop(held, None)
                outputs.pop(dep, None)  # a selector's: its pick, handed on again once rerun
                take_back(graph.task(held))
                waiting.append(graph.task(held))

    async def judge(handle: Any, task: TaskNode) -> None:
        """A finished run of ``task`` whose inputs all finished well."""
        st = _stats(backend, handle, task)
        if st.failure is not None:
            if isinstance(st.failure.error, ReplicaLost):
                n = losses[task.id] = losses.get(task.id, 0) + 1
                if n > MAX_LOSSES:
                    raise TaskFailed(task, st.failure, n)
                delay = 0.0  # at once, on a replica that is up
            else:
                n = failures[task.id] = failures.get(task.id, 0) + 1
                if not task.retry.retries(st.failure.error, n):
                    raise TaskFailed(task, st.failure, n)
                delay = task.retry.delay(n)
            not_before[task.id] = time.monotonic() + delay
            outputs.pop(task.id, None)  # its error was read with its stats
            take_back(task)
            await restore_inputs(task, lost=isinstance(st.failure.error, ReplicaLost))
            waiting.append(task)
            if on_retry is not None:
                await _value(on_retry(Retry(task, n, st.failure, delay)))
            return
        stats[task.id] = st
        if task.operator.role == "selector":
            selections[task.id] = _checked(st.selection, task, len(plans.live(task.id)))
        if on_progress is not None:
            total = len(graph.tasks) - len(plans.skipped)
            ready = [stats[d].finished for d in _input_tasks(task, selections, plans)]
            await _value(on_progress(Progress(len(stats), total, stats[task.id],
                                              max(ready, default=None))))

    try:
        while waiting or running or planning or finished_early:
            if should_stop is not None and await _value(should_stop()):
                raise RunCanceled(f"stopped with {len(waiting)} of {len(graph.tasks)} tasks "
                                  "unstarted")
            now = time.monotonic()
            waiting.sort(key=lambda t: order[t.id])  # a task after the ones it reads
            handed: list[TaskNode] = []
            for task in list(waiting):
                if not_before.get(task.id, 0.0) > now:
                    continue
                needed = [i for i in task.inputs if not isinstance(i, Source)
                          and not (isinstance(i, FromTask) and i.task in plans.skipped)]
                if any([await resolve(i) is None for i in needed]):
                    continue
                selector = plans.undecided_selector_of(task.id)
                if selector is not None:  # its selector first looks at the input
                    if all(s.id != selector.id for s in planning.values()):
                        handle = backend.plan(selector.operator, selector.params,  # type: ignore
                                              await resolve(task.inputs[0]),
                                              plans.branch_names(selector))
                        planning[handle] = selector
                    continue
                handles = [await resolve(i) for i in inputs_of(task)]
                out, st = backend.call(task.id, task.operator, plans.params(task), handles)
                outputs[task.id] = out
                running[st] = task
                waiting.remove(task)
                handed.append(task)
            if handed and on_start is not None:  # heard before any of them is judged
                await _value(on_start(handed))
            backing_off = [not_before[t.id] - now for t in waiting if not_before.get(t.id, 0) > now]
            if not running and not planning:
                if not backing_off:
                    raise RuntimeError(f"tasks can never start: {[t.id for t in waiting]}")
                await asyncio.sleep(min(min(backing_off), poll_seconds))
                continue
            timeout = min([poll_seconds, *backing_off])
            for handle in await ready_when([*running, *planning, *abandoned], timeout):
                if handle in abandoned:  # taken back: its (failed) result only needs reading
                    _read_quietly(backend, handle, abandoned.pop(handle))
                    continue
                if handle in planning:
                    plan = plans.decide(planning.pop(handle), plan_of(backend, handle))
                    waiting = [t for t in waiting if t.id not in plans.skipped]
                    if on_plan is not None:
                        await _value(on_plan(plan))
                    continue
                if handle not in running:  # taken back by a failure judged in this round
                    continue
                finished_early[handle] = running.pop(handle)
                # Judged in the graph's order: a task whose inputs are not judged yet waits
                # (its failure may be only theirs, passed on).
                while ready := [(h, t) for h, t in finished_early.items()
                                if all(d in stats for d in _input_tasks(t, selections, plans))]:
                    for h, t in ready:
                        if h in finished_early:
                            del finished_early[h]
                            await judge(h, t)
    except (TaskFailed, RunCanceled):
        # What was handed on past the end: its errors read, so Ray reports none unhandled
        live = {h: outputs.get(t.id) for table in (running, finished_early)
                for h, t in table.items()}
        await _discard(ready_when, {**abandoned, **live, **dict.fromkeys(planning)},
                       DISCARD_SECONDS)
        raise
    await _discard(ready_when, abandoned, DISCARD_SECONDS)

    output = (backend.get(outputs[graph.output]) if graph.output in outputs
              else await _value(done[graph.output].load()))
    return RunResult(output, stats, _qc_reports(graph, selections, plans),
                     time.perf_counter() - started, outputs)


async def _value(result: Any) -> Any:
    """A callback's result, awaited when it was a coroutine function's."""
    return await result if inspect.isawaitable(result) else result


class _Readiness:
    """Waits on the event loop for any of a run's handles to be ready: each handle's
    backend future (a Ray ObjectRef's, a local Future itself), wrapped once."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._futures: dict[Any, asyncio.Future[Any]] = {}

    def _future(self, handle: Any) -> asyncio.Future[Any]:
        fut = self._futures.get(handle)
        if fut is None:
            fut = asyncio.wrap_future(self.backend.future(handle))
            fut.add_done_callback(_retrieved)  # its error is read through the backend
            self._futures[handle] = fut
        return fut

    async def __call__(self, handles: list[Any], timeout: float) -> list[Any]:
        futures = {self._future(h): h for h in handles}
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        ready = [h for f, h in futures.items() if f.done()]
        for h in ready:
            del self._futures[h]
        return ready


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _discard(ready_when: _Readiness, handles: Mapping[Any, Any], seconds: float) -> None:
    """Read what runs no longer needed left behind, within ``seconds``: a failed one's error
    (its stats and its output), so that the backend never reports it as never read. A run
    that succeeded is not fetched."""
    left = dict(handles)
    deadline = time.monotonic() + seconds
    while left and (remaining := deadline - time.monotonic()) > 0:
        for handle in await ready_when(list(left), remaining):
            _read_quietly(ready_when.backend, handle, left.pop(handle))


def _read_quietly(backend: Backend, stats: Any, output: Any | None) -> None:
    """A finished run nobody needs: its stats read, and its output only if it failed."""
    try:
        backend.get(stats)
    except Exception:  # noqa: BLE001 - the error is the point: it is read now
        if output is not None:
            with contextlib.suppress(Exception):
                backend.get(output)


def _input_tasks(task: TaskNode, selections: Mapping[str, Selection],
                 plans: Plans) -> list[str]:
    """The tasks whose outputs ``task`` reads: a selector's, for the candidate it picks."""
    ids = []
    for inp in task.inputs:
        if isinstance(inp, FromTask) and inp.task not in plans.skipped:
            ids.append(inp.task)
        elif isinstance(inp, Picked):
            ids.append(inp.selector)
            if (verdict := selections.get(inp.selector)) is not None:  # and what it picked
                ids.append(plans.live(inp.selector)[verdict.pick])
    return ids


def _held_by(task_id: str, selections: Mapping[str, Selection], plans: Plans) -> str:
    """The task whose checkpoint holds ``task_id``'s output: a selector's is its pick's."""
    verdict = selections.get(task_id)
    return task_id if verdict is None else plans.live(task_id)[verdict.pick]


def _stats(backend: Backend, handle: Any, task: TaskNode) -> TaskStats:
    """The task's stats; a replica lost with the task on it (the backend raises) is a
    failure like any other, for the retry policy to judge."""
    try:
        return backend.get(handle)
    except Exception as exc:  # noqa: BLE001 - e.g. Ray's ActorDiedError
        now = time.time()
        return TaskStats(task.id, task.operator.name, now, now, 0.0, "", 0,
                         TaskFailure(exc, traceback.format_exc()))


def _checked(verdict: Any, task: TaskNode, n: int) -> Selection:
    if (not isinstance(verdict, Selection) or not 0 <= verdict.pick < n
            or len(verdict.scores) != n):
        raise TypeError(f"selector '{task.operator.name}' must return a Selection picking one "
                        f"of {n} candidates, got {verdict!r}")
    return verdict


def _qc_reports(graph: TaskGraph, selections: dict[str, Selection],
                plans: Plans) -> list[QCReport]:
    reports = []
    for task in graph.tasks:
        verdict = selections.get(task.id)
        if verdict is None:
            continue
        names = [graph.task(c).branch or c for c in plans.live(task.id)]
        plan = plans.decisions.get(task.id)
        reports.append(QCReport(
            stage=task.stage,
            algorithm=graph.algorithms.get(task.stage, task.stage),
            pick=names[verdict.pick],
            scores=dict(zip(names, verdict.scores, strict=True)),
            details=dict(zip(names, verdict.details, strict=False)),
            skipped={graph.task(b).branch or b: why for b, why in plans.skipped.items()
                     if b in graph.candidates(task.id)},
            plan={"reasons": plan.reasons, "measures": plan.measures} if plan else {},
        ))
    return reports
