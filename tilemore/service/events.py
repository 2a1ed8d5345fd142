"""What a conductor tells the rest of the service while it runs a thread: events, and the
listeners that act on them.

The conductor schedules; everything else a thread's progress must cause is a listener:
recording each task in the registry, charging it, metering, tracing, indexing failures. A new
concern (a webhook, removing checkpoints once a thread is done) is one more listener, passed
to the conductor, with no change to how threads run.

A listener is *required* when the thread cannot go on without it (the registry write, the
charge): its exception stops the run — a lost lease, a database down. Any other listener is
best effort: what it raises is logged, and the thread goes on.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tilemore.billing.entries import Charge
from tilemore.billing.money import add
from tilemore.billing.pricing import price_of
from tilemore.engine.backend import ReplicaLost
from tilemore.engine.host import TaskStats
from tilemore.metrics import Metrics
from tilemore.operator import Operator
from tilemore.pipeline.graph import TaskNode
from tilemore.pipeline.run import BranchPlan, Retry, TaskFailed
from tilemore.service.failures import FailureRecorder
from tilemore.service.tracing import NO_TRACE, ThreadTrace
from tilemore.store import ThreadRecord, ThreadRepository

log = logging.getLogger("tilemore.conductor")

PRICES_KEPT = 4096  # threads whose prices a charger remembers: far more than run at once


@dataclass(frozen=True)
class Event:
    hook: ClassVar[str]  # the Listener method that receives it
    thread: ThreadRecord
    epoch: int | None  # the lease's: every write a listener makes names it
    at: float = field(default_factory=time.time, kw_only=True)
    trace: ThreadTrace = field(default=NO_TRACE, kw_only=True)


@dataclass(frozen=True)
class TasksStarted(Event):
    """Tasks handed to the backend together (a Ray DAG hands a whole chain at once)."""

    hook = "tasks_started"
    tasks: tuple[TaskNode, ...]
    first: bool  # the thread's first tasks: its time in the queue ends here


@dataclass(frozen=True)
class TaskFinished(Event):
    hook = "task_finished"
    stats: TaskStats
    operator: type[Operator]
    queued: float | None  # seconds between the hand-off and the worker starting it


@dataclass(frozen=True)
class TaskRetried(Event):
    hook = "task_retried"
    retry: Retry


@dataclass(frozen=True)
class BranchesSkipped(Event):
    hook = "branches_skipped"
    plan: BranchPlan
    operators: Mapping[str, type[Operator]]  # task id → operator, for what skipping saved


@dataclass(frozen=True)
class TaskFailedForGood(Event):
    hook = "task_failed"
    failure: TaskFailed


@dataclass(frozen=True)
class ThreadEnding(Event):
    """The thread's end, before it is recorded: what it did is settled now. ``tasks`` are
    its finished tasks, this run's and any earlier run's (a conductor that died before
    settling them charged nothing)."""

    hook = "thread_ending"
    status: str  # done, failed or canceled: recorded once every listener has heard it
    tasks: tuple[TaskStats, ...]
    operators: Mapping[str, type[Operator]]  # task id → operator, for the prices


@dataclass(frozen=True)
class ThreadEnded(Event):
    hook = "thread_ended"
    status: str  # done, failed or canceled: already recorded when this is sent


class Listener:
    """Override the hooks a concern needs; the rest do nothing."""

    required: ClassVar[bool] = False

    def tasks_started(self, event: TasksStarted) -> None: ...
    def task_finished(self, event: TaskFinished) -> None: ...
    def task_retried(self, event: TaskRetried) -> None: ...
    def branches_skipped(self, event: BranchesSkipped) -> None: ...
    def task_failed(self, event: TaskFailedForGood) -> None: ...
    def thread_ending(self, event: ThreadEnding) -> None: ...
    def thread_ended(self, event: ThreadEnded) -> None: ...


class Listeners:
    """Sends each event to every listener, in order."""

    def __init__(self, listeners: Iterable[Listener]) -> None:
        self.listeners = list(listeners)

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            if listener.required:
                getattr(listener, event.hook)(event)
                continue
            try:
                getattr(listener, event.hook)(event)
            except Exception as exc:  # noqa: BLE001 - best effort never stops a thread
                log.warning("thread %s: %s's %s failed: %s", event.thread.id,
                            type(listener).__name__, event.hook, exc)


# -- the service's own listeners ------------------------------------------------------------


class Recorder(Listener):
    """Each task's state in the thread registry, under the thread's lease."""

    required = True

    def __init__(self, threads: ThreadRepository) -> None:
        self.threads = threads

    def tasks_started(self, event: TasksStarted) -> None:  # one write for them all
        self.threads.tasks_started(event.thread.id, [t.id for t in event.tasks], event.at,
                                   epoch=event.epoch)

    def task_finished(self, event: TaskFinished) -> None:
        s = event.stats
        self.threads.task_done(event.thread.id, s.task_id, s.started, s.finished, s.megapixels,
                               s.checkpoint, epoch=event.epoch)

    def branches_skipped(self, event: BranchesSkipped) -> None:
        if event.plan.skipped:
            self.threads.tasks_skipped(event.thread.id, event.plan.skipped, epoch=event.epoch)


class Charger(Listener):
    """A thread's finished tasks are charged when it ends, each once (keyed by thread and
    task), with what its hold did not spend given back, in one ledger transaction under the
    lease: one trip to the billing actor per thread, not one per task. Branches a selector
    ruled out give their share of the hold back when it rules."""

    required = True

    def __init__(self, billing: Any, metrics: Metrics) -> None:
        self.billing, self.metrics = billing, metrics
        self._prices: OrderedDict[str, dict[str, Any]] = OrderedDict()  # thread id → prices

    def prices(self, thread_id: str) -> dict[str, Any]:
        """The admin's prices, read once per thread (a price change applies to the threads
        that start after it). Bounded: a run that never ended (a lost lease) is forgotten."""
        if thread_id not in self._prices:
            self._prices[thread_id] = self.billing.prices()
            while len(self._prices) > PRICES_KEPT:
                self._prices.popitem(last=False)
        return self._prices[thread_id]

    def tasks_started(self, event: TasksStarted) -> None:
        if event.first:
            self.prices(event.thread.id)  # the prices when it started are the ones it pays

    def thread_ending(self, event: ThreadEnding) -> None:
        rec, prices = event.thread, self.prices(event.thread.id)
        charges = [Charge(s.task_id, op.name, s.megapixels,
                          price_of(op, prices).cost(s.megapixels))
                   for s in event.tasks if (op := event.operators.get(s.task_id))]
        settled = self.billing.settle(
            account=rec.account, traced_for=rec.domain if rec.account != rec.domain else None,
            thread_id=rec.id, hold=rec.idem_key, charges=charges, epoch=event.epoch)
        for appended in settled:
            if not appended.duplicate:
                self.metrics.charged(rec.domain, -float(appended.entry.amount))

    def branches_skipped(self, event: BranchesSkipped) -> None:
        plan = event.plan
        if not plan.skipped or plan.size is None:
            return
        mp = plan.size[0] * plan.size[1] / 1e6
        prices = self.prices(event.thread.id)
        saved = add(*(price_of(event.operators[t], prices).cost(mp) for t in plan.skipped))
        try:
            self.billing.release_part(event.thread.idem_key, saved)
        except Exception as exc:  # noqa: BLE001 - the whole hold goes back at the end
            log.warning("thread %s: skipped branches' credits not given back now: %s",
                        event.thread.id, exc)

    def thread_ended(self, event: ThreadEnded) -> None:
        self._prices.pop(event.thread.id, None)


class Meter(Listener):
    """Task and thread times, queue times, retries (see :mod:`tilemore.metrics`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def tasks_started(self, event: TasksStarted) -> None:
        if event.first:
            self.metrics.thread_started(event.thread.pipeline,
                                        event.at - event.thread.created_at)

    def task_finished(self, event: TaskFinished) -> None:
        s = event.stats
        self.metrics.task_finished(event.operator.name, s.seconds, event.queued, s.tiles)

    def task_retried(self, event: TaskRetried) -> None:
        r = event.retry
        self.metrics.task_retried(r.task.operator.name,
                                  isinstance(r.failure.error, ReplicaLost))

    def thread_ended(self, event: ThreadEnded) -> None:
        self.metrics.thread_ended(event.thread.pipeline, event.status,
                                  event.at - event.thread.created_at)


class Tracing(Listener):
    """A span per task in the thread's trace (the trace itself travels with the event)."""

    def tasks_started(self, event: TasksStarted) -> None:
        for task in event.tasks:  # a retried task's span starts at its first run
            event.trace.task_started(task.id, event.at)

    def task_finished(self, event: TaskFinished) -> None:
        event.trace.task_span(event.stats)  # the worker's own times, tiles and megapixels

    def task_retried(self, event: TaskRetried) -> None:
        event.trace.task_retried(event.retry, event.at)  # an event on the task's span

    def task_failed(self, event: TaskFailedForGood) -> None:
        event.trace.task_failed(event.failure, event.at)  # the task's span, in error

    def thread_ended(self, event: ThreadEnded) -> None:
        event.trace.finished(event.status)


class FailureIndex(Listener):
    """Every failed run of a task, retried or final: searchable, and an ECS log line."""

    def __init__(self, failures: FailureRecorder) -> None:
        self.failures = failures

    def task_retried(self, event: TaskRetried) -> None:
        self.failures.retried(event.thread, event.retry, event.trace.trace_id)

    def task_failed(self, event: TaskFailedForGood) -> None:
        self.failures.failed(event.thread, event.failure, event.trace.trace_id)
