"""The conductor: runs accepted task threads to the end, and resumes them after a crash.

Every state change is written to the thread registry as it happens; every finished task's
output is a checkpoint in the blob store. A thread picked up again (after the conductor, a
worker or the whole service died) skips the tasks whose checkpoints exist.

Any number of conductors share the threads through leases in the registry
(:mod:`tilemore.store.leases`): a conductor runs a thread only while it holds its lease,
renews it while the thread runs, names its epoch in every write and charge, and gives it back
when the thread ends. A conductor that dies loses its leases when they run out, and another
claims its threads; one restarted under the same name takes its own back at once. Its side
of the leases is :mod:`tilemore.service.claims`; its background claims, renewals and hold
sweeps are :mod:`tilemore.service.sweeps`. This module runs the threads it holds.

The threads run as tasks on the conductor's one event loop, which waits for their tasks'
handles (no OS thread per run); whatever blocks — the registry, the blob store, the billing
actor, the listeners — runs on a few I/O threads.

Credits set aside for a thread (its hold) go back on every way it ends: done, failed,
canceled, given up on. A release the database refused then, and a hold whose thread was never
recorded (the ingress died in between), are given back by the hold sweep that runs beside
the thread sweep (:meth:`Conductor.sweep_holds`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from tilemore.billing.service import Billing
from tilemore.blobs import BlobNotFound, BlobStore, blob_key
from tilemore.catalog import Catalog
from tilemore.engine import checkpoint
from tilemore.engine.backend import Backend
from tilemore.engine.host import TaskStats
from tilemore.errors import ServiceUnavailable, TilemoreError
from tilemore.lifecycle import Lifecycle
from tilemore.metrics import NO_METRICS, Metrics
from tilemore.operator import Operator
from tilemore.pipeline.graph import TaskGraph, TaskNode
from tilemore.pipeline.run import (
    BranchPlan,
    Progress,
    Retry,
    RunCanceled,
    RunResult,
    TaskFailed,
    run_graph_async,
)
from tilemore.service.claims import Claims
from tilemore.service.ecs import EcsErrorLog
from tilemore.service.events import (
    BranchesSkipped,
    Charger,
    FailureIndex,
    Listener,
    Listeners,
    Meter,
    Recorder,
    TaskFailedForGood,
    TaskFinished,
    TaskRetried,
    TasksStarted,
    ThreadEnded,
    ThreadEnding,
    Tracing,
)
from tilemore.service.failures import FailureRecorder
from tilemore.service.resume import Start, start_of, task_stats, thread_graph
from tilemore.service.run_loop import IO_THREADS, RunLoop
from tilemore.service.sweeps import Sweeps, sweep_holds
from tilemore.service.tracing import NO_TRACE, ThreadTrace, Tracer
from tilemore.store import (
    AlsoWrite,
    ErrorIndex,
    ResultInfo,
    ThreadRecord,
    ThreadRepository,
)
from tilemore.store.leases import Lease, LeaseLost

log = logging.getLogger("tilemore.conductor")

CANCEL_CHECK_SECONDS = 0.25  # a run reads its cancel flag at most this often


class Conductor:
    def __init__(self, threads: ThreadRepository, blobs: BlobStore, catalog: Catalog,
                 backend: Backend, billing: Billing | None = None, concurrency: int = 16,
                 max_attempts: int = 3,
                 errors: ErrorIndex | None = None, error_log: EcsErrorLog | None = None,
                 tracer: Tracer | None = None, metrics: Metrics = NO_METRICS,
                 hold_sweep_seconds: float = 15.0, hold_grace_seconds: float = 120.0,
                 batch_hold_grace_seconds: float = 6 * 3600.0, name: str = "conductor",
                 lease_seconds: float = 10.0, claim_seconds: float = 1.0,
                 listeners: Iterable[Listener] = (),
                 lifecycle: Lifecycle | None = None) -> None:
        """``errors`` indexes every failed run of a task for search, and ``error_log`` writes
        it as an ECS line (default: to the ``tilemore.errors.ecs`` logger only). ``tracer``
        gets a trace per thread and a span per task (default: none); ``metrics`` records
        task and thread times, retries, credits and QC picks.

        Every ``hold_sweep_seconds`` the sweeper also gives back holds no work owns: those
        of ended threads at once, those no thread was recorded for after
        ``hold_grace_seconds`` (longer than an ingress takes from reserving to recording),
        a batch's after ``batch_hold_grace_seconds`` (a batch releases its own; this is for
        one that died).

        ``name`` is the lease owner: unique among running conductors, and the same again
        when one restarts (it then takes its own threads back without waiting). Leases last
        ``lease_seconds`` and are renewed every third of that; unleased threads are claimed
        every ``claim_seconds``.

        What a thread's progress causes — its record, charges, metrics, spans, the error
        index — is done by listeners on the conductor's events (:mod:`tilemore.service.events`);
        ``listeners`` adds more (a webhook, say), after the service's own."""
        self.threads, self.blobs, self.catalog, self.backend = threads, blobs, catalog, backend
        self.name = name
        self.claims = Claims(threads, name, lease_seconds, slots=concurrency)
        self._claim_seconds = claim_seconds
        self._sweeps = Sweeps()
        self.billing = billing
        self.tracer = tracer or Tracer(None)
        self.metrics = metrics
        self.failures = FailureRecorder(errors, error_log)
        own: list[Listener] = [Meter(metrics)]
        if billing is not None:
            own.append(Charger(billing, metrics))  # settles a thread before its end is recorded
        own += [Recorder(threads), Tracing(), FailureIndex(self.failures)]
        self.events = Listeners([*own, *listeners])
        # Which blobs each thread uses, dated when it ends (tilemore.lifecycle): None keeps all.
        self.lifecycle = lifecycle
        self._dating = lifecycle.listener() if lifecycle is not None else None
        if self._dating is not None:
            self.events.add(self._dating)
        # One event loop runs every thread here (tilemore.pipeline.run waits on it for the
        # backend); what blocks goes to a few I/O threads, not one OS thread per run.
        self._runs = RunLoop(min(IO_THREADS, concurrency))
        self._max_attempts = max_attempts
        self._attempts: dict[str, int] = {}  # errors that were not the task's own, by thread
        catalog.record_versions(threads)  # what it runs now, kept for after the next deploy
        self._hold_sweep_seconds = hold_sweep_seconds
        self._hold_grace = hold_grace_seconds
        self._batch_hold_grace = batch_hold_grace_seconds

    # -- scheduling (the leases: tilemore.service.claims) ----------------------------------

    def submit(self, thread_id: str) -> bool:
        """Run a thread here if its lease can be had (a hand-off from the ingress): False
        when it is already running here, this conductor is full, the thread is leased to
        another conductor, or finished."""
        # Full counts once sweeping: a conductor driven by hand (a tool, a test) takes all.
        lease = self.claims.take(thread_id, bounded=self._sweeps.started)
        if lease is not None:
            self._runs.start(self._guarded(thread_id))
        return lease is not None

    def claim(self, *, own: bool = False) -> int:
        """Claim as many unleased threads as there are free slots here (``own``: also those
        leased under this conductor's name — its previous life, at start-up), and start
        them."""
        leases = self.claims.take_free(own=own)
        for lease in leases:
            self._runs.start(self._guarded(lease.thread_id))
        return len(leases)

    def resume_unfinished(self) -> int:
        """Take back this conductor's own threads, then any others free (at start-up)."""
        return self.claim(own=True)

    def epoch(self, thread_id: str) -> int | None:
        """The epoch this conductor holds the thread's lease at (None: not leased here)."""
        return self.claims.epoch(thread_id)

    def renew(self) -> list[Lease]:
        """Extend every lease held here; a lost one stops its run at the next step."""
        return self.claims.renew()

    def sweep_holds(self) -> int:
        """Give back holds no work owns any more, a few batches at most; how many."""
        if self.billing is None:
            return 0
        return sweep_holds(self.billing, self._hold_grace, self._batch_hold_grace)

    def start_sweeping(self) -> None:
        """Take this conductor's own threads back now, then claim free ones every
        ``claim_seconds`` (a hand-off lost between the ingress and us only delays a thread;
        a dead conductor's threads come here once their leases run out), and renew the
        leases held every third of their time; sweep holds beside."""
        self._sweeps.start(lambda own: self.claim(own=own), self.renew,
                           claim_seconds=self._claim_seconds,
                           renew_seconds=self.claims.lease_seconds / 3,
                           holds=self.sweep_holds if self.billing is not None else None,
                           hold_seconds=self._hold_sweep_seconds)

    def active(self) -> int:
        return self.claims.running()

    def drain(self) -> int:
        """Take no new thread from now on (this conductor leaves the pool: see
        :mod:`tilemore.service.conductor_pool`); the threads it still runs, which it
        finishes, renewing their leases. At 0 it may be stopped with nothing lost."""
        return self.claims.drain()

    def close(self) -> None:
        """Stop sweeping and stop the runs here: their leases go back (or run out), and
        whoever claims the threads next resumes them from their checkpoints."""
        self._sweeps.stop()
        self._runs.close()

    # -- running ---------------------------------------------------------------------------

    def _run_guarded(self, thread_id: str) -> None:
        """Run the thread as a claim does (``_guarded`` on the loop), from another thread,
        and wait: what a sweep's retry looks like to tests and tools."""
        self._runs.wait(self._guarded(thread_id))

    async def _guarded(self, thread_id: str) -> None:
        try:
            await self._run_thread(thread_id)
            self._attempts.pop(thread_id, None)
        except LeaseLost as exc:  # another conductor runs it now: nothing more to do here
            log.info("thread %s: %s", thread_id, exc.message)
        except ServiceUnavailable as exc:  # a full disk, a database down: not the thread's
            log.error("thread %s waits: %s (%s); the next sweep retries it", thread_id,
                      exc.message, exc.code)
        except Exception as exc:  # noqa: BLE001 - a lost replica, a broken store…
            attempts = self._attempts[thread_id] = self._attempts.get(thread_id, 0) + 1
            if attempts < self._max_attempts:
                log.warning("thread %s: attempt %d failed (%s); the next sweep retries it",
                            thread_id, attempts, exc)
            else:  # the same thread keeps breaking its conductor: stop, and say why
                log.exception("thread %s: giving up after %d attempts", thread_id, attempts)
                self._attempts.pop(thread_id, None)
                await self._runs.blocking(self._give_up, thread_id,
                                     f"gave up after {attempts} attempts: {exc}")
        finally:
            with contextlib.suppress(RuntimeError):  # closing: the lease runs out instead
                await self._given_back(thread_id)

    async def _given_back(self, thread_id: str) -> None:
        """The lease back, if the run's end has not given it back already."""
        if self.claims.holds(thread_id):
            await self._runs.blocking(self.claims.give_back, thread_id)
        else:
            self.claims.forget(thread_id)

    def _give_up(self, thread_id: str, message: str) -> None:
        """Settle what the thread did, fail it ``internal_error``, and give back its hold.
        While the registry or the ledger is out of service the thread stays processing (the
        next sweep tries again); a settlement that fails otherwise is logged, and the thread
        fails unpaid: this is the last resort for a thread that keeps breaking."""
        try:
            epoch = self.epoch(thread_id)  # LeaseLost: another conductor runs it now
            rec = self.threads.get_thread(thread_id)
            if rec is None or rec.status != "processing":
                return
            try:
                self._settle_recorded(rec, epoch)
            except (ServiceUnavailable, LeaseLost):
                raise
            except Exception as exc:  # noqa: BLE001 - see above
                log.error("thread %s: its finished tasks were not charged: %s", thread_id, exc)
            self.threads.fail_thread(thread_id, "internal_error", message, epoch=epoch)
        except Exception as exc:  # noqa: BLE001 - still processing: the next sweep retries
            log.error("thread %s: could not be failed (%s); the next sweep runs it again",
                      thread_id, exc)
            return
        self._release(rec)

    def _settle_recorded(self, rec: ThreadRecord, epoch: int | None) -> None:
        """Settle the tasks the thread's record says are done."""
        ops = {t.id: t.operator for t in self._graph(rec).tasks}
        tasks = tuple(task_stats(t) for t in rec.tasks if t.status == "done" and t.task_id in ops)
        self.events.emit(ThreadEnding(rec, epoch, status="failed", tasks=tasks, operators=ops))

    def run_thread(self, thread_id: str) -> str:
        """Run one thread to its end; return its final status. Claims the thread's lease
        first unless it holds it ("leased": another conductor has it)."""
        return self._runs.wait(self._run_thread(thread_id))

    async def _run_thread(self, thread_id: str) -> str:
        if self.epoch(thread_id) is None:
            lease = await self._runs.blocking(self.claims.take_one, thread_id)
            if lease is None:
                rec = await self._runs.blocking(self.threads.get_thread, thread_id)
                return "unknown" if rec is None else (
                    "leased" if rec.status == "processing" else rec.status)
            try:
                return await self._run_thread(thread_id)
            finally:
                await self._given_back(thread_id)
        rec = await self._runs.blocking(self.threads.get_thread, thread_id)
        if rec is None:
            return "unknown"
        if rec.status != "processing":
            await self._runs.blocking(self._release, rec)
            return rec.status
        return await self._run_traced(rec)

    async def _run_traced(self, rec: ThreadRecord) -> str:
        """``_run`` inside the thread's trace. A resumed thread keeps the trace id it had; the
        record keeps the id so that the thread's answer leads to its trace."""
        attributes = {"pipeline": rec.pipeline, "domain": rec.domain, "account": rec.account}
        with self.tracer.thread_span(rec.id, trace_id=rec.trace_id, **attributes) as trace:
            if trace.trace_id is not None and trace.trace_id != rec.trace_id:
                try:
                    await self._runs.blocking(self.threads.set_trace_id, rec.id, trace.trace_id,
                                              epoch=self.epoch(rec.id))
                except Exception as exc:  # noqa: BLE001 - tracing never fails a thread
                    log.warning("thread %s: trace id not recorded: %s", rec.id, exc)
            ending = await self._run(rec, trace)
            await self._runs.blocking(self._end, rec, ending, trace)
            return ending.status

    def _end(self, rec: ThreadRecord, ending: Ending, trace: ThreadTrace) -> None:
        """A run's end, in one trip to the I/O threads: settled first (the charger charges
        its finished tasks and gives back what its hold did not spend, in one ledger
        transaction), then recorded (the result stored and the thread done, or failed, or
        canceled, its lease given back in the same write), and its end heard by the
        listeners. Settling first means an ended thread is always settled: when settling
        fails the thread is still running, and whoever runs it next settles it (a charge
        made before stands)."""
        epoch = self.claims.last_epoch(rec.id)  # even if lost at the last step
        self.events.emit(ThreadEnding(rec, epoch, status=ending.status,
                                      tasks=tuple(ending.tasks.values()),
                                      operators=ending.operators, trace=trace))
        # the lifecycle references and dates what the thread leaves in the same write
        also = self._dating.ending(rec, ending.status) if self._dating is not None else None
        if ending.result is not None:
            for q in ending.result.qc:
                self.metrics.qc_pick(rec.pipeline, q.stage, q.pick)
            self._finish(rec, ending.result, epoch, also)
        elif ending.error is not None:
            self.threads.fail_thread(rec.id, *ending.error, epoch=epoch, also=also)
        else:
            self.threads.mark_canceled(rec.id, epoch=epoch, also=also)
        self.events.emit(ThreadEnded(rec, epoch, status=ending.status, trace=trace))
        self.claims.forget(rec.id)  # its lease went back with the record

    def _release(self, rec: ThreadRecord) -> None:
        """Give back what the thread set aside and did not spend. Never raises: the thread
        has ended whatever the database says now, and the hold sweep retries."""
        if self.billing is None:
            return
        try:
            self.billing.release(rec.idem_key)
        except Exception as exc:  # noqa: BLE001 - a database outage, a restarting actor
            log.warning("thread %s: its hold was not released (%s); the hold sweep will",
                        rec.id, exc)

    def _prepare(self, rec: ThreadRecord) -> Start:
        """What a run starts from (on an I/O thread: :mod:`tilemore.service.resume`)."""
        return start_of(rec, self._graph(rec), self.blobs, self._checkpoint)

    def _graph(self, rec: ThreadRecord) -> TaskGraph:
        return thread_graph(self.catalog, self.threads, rec)

    async def _run(self, rec: ThreadRecord, trace: ThreadTrace = NO_TRACE) -> Ending:
        """Run the thread's graph, and say how it ended (settled and recorded by
        :meth:`_end`)."""
        thread_id = rec.id
        epoch = self.epoch(thread_id)  # every write names it: a lost lease refuses them
        try:
            start = await self._runs.blocking(self._prepare, rec)
        except ServiceUnavailable:
            raise  # the thread waits for the store; it is not failed
        except TilemoreError as exc:  # a version no longer known, adjustments it refuses
            if rec.cancel_requested:
                return Ending("canceled", {}, {})
            return Ending("failed", {}, {}, error=(exc.code, exc.message, None))
        ops = {t.id: t.operator for t in start.graph.tasks}
        # Its finished tasks, to settle at the end: an earlier run's too, which a conductor
        # that died before settling left unpaid (one paid before is not charged again).
        done = {t.task_id: task_stats(t) for t in rec.tasks if t.status == "done"
                and t.task_id in ops}
        if rec.cancel_requested:
            return Ending("canceled", done, ops)
        if isinstance(start.data, BlobNotFound):
            return Ending("failed", done, ops, error=(
                start.data.code, f"the thread's input image is no longer stored "
                f"({start.data.message}); submit it again", None))
        handed: dict[str, float] = {}  # task id → when it went to the backend
        emit = self.events.emit

        async def started(tasks: list[TaskNode]) -> None:
            first = not handed and not start.completed
            event = TasksStarted(rec, epoch, tasks=tuple(tasks), first=first, trace=trace)
            handed.update((t.id, event.at) for t in tasks)
            await self._runs.blocking(emit, event)

        async def finished(p: Progress) -> None:
            s = done[p.task.task_id] = p.task
            # its queue time: from when it was handed over, or its inputs were ready if later
            waited = max(handed.get(s.task_id, 0.0), p.inputs_ready or 0.0)
            queued = s.started - waited if s.task_id in handed else None
            await self._runs.blocking(emit, TaskFinished(
                rec, epoch, stats=s, operator=ops[s.task_id], queued=queued, trace=trace))

        async def planned(plan: BranchPlan) -> None:
            """Branches the selector ruled out: recorded as skipped, their share of the
            hold given back (they are never charged)."""
            await self._runs.blocking(emit, BranchesSkipped(rec, epoch, plan=plan, operators=ops,
                                                       trace=trace))

        async def retrying(r: Retry) -> None:  # not charged: only a finished task is
            log.warning("thread %s: task %s failed (%s: %s); retry %d in %.1f s", thread_id,
                        r.task.id, type(r.failure.error).__name__, r.failure.error, r.failures,
                        r.delay)
            await self._runs.blocking(emit, TaskRetried(rec, epoch, retry=r, trace=trace))

        asked = [time.monotonic()]  # when the cancel flag was last read: with the record

        async def stop_asked() -> bool:
            """Between steps: raise when the lease went elsewhere (known here); stop for a
            cancel, read from the registry at most every CANCEL_CHECK_SECONDS."""
            self.epoch(thread_id)  # raises LeaseLost
            if time.monotonic() - asked[0] < CANCEL_CHECK_SECONDS:
                return False
            asked[0] = time.monotonic()
            return await self._runs.blocking(self.threads.cancel_requested, thread_id)

        try:
            result = await run_graph_async(
                start.graph, start.data, self.backend, finished, completed=start.completed,
                on_start=started, on_retry=retrying, on_plan=planned, skipped=start.skipped,
                reload=lambda st: self._checkpoint(st.checkpoint),
                should_stop=stop_asked)
        except RunCanceled:
            return Ending("canceled", done, ops)
        except TaskFailed as exc:
            if isinstance(exc.error, ServiceUnavailable):
                raise exc.error from None  # the thread waits for the store; it is not failed
            # indexed, logged and traced before the thread is recorded as failed
            await self._runs.blocking(emit, TaskFailedForGood(rec, epoch, failure=exc, trace=trace))
            code = exc.error.code if isinstance(exc.error, TilemoreError) else "operator_failed"
            tries = f" (after {exc.attempts} attempts)" if exc.attempts > 1 else ""
            return Ending("failed", done, ops, error=(code, f"{exc.error}{tries}", exc.task_id))
        return Ending("done", done, ops, result=result)

    def _finish(self, rec: ThreadRecord, result: RunResult, epoch: int | None,
                also: AlsoWrite | None = None) -> None:
        """Store the result and record the thread done (on an I/O thread); the record names
        the result, which ``also`` (the lifecycle's end) references in the same write."""
        out = result.output
        key = blob_key(out.data)
        if self.lifecycle is not None:  # pinned, then put: see tilemore.store.lifecycle
            self.lifecycle.pin(key, "result", len(out.data))
        self.blobs.put(out.data, kind="result")
        self.threads.finish_thread(rec.id, ResultInfo(key, key, len(out.data),
                                                      out.content_type, out.width, out.height),
                                   qc=[asdict(q) for q in result.qc], epoch=epoch, also=also)

    async def _checkpoint(self, key: str) -> object:
        """A finished task's output, read back from its checkpoint on an I/O thread."""
        return await self._runs.blocking(lambda: checkpoint.load(self.blobs.get(key)))


@dataclass(frozen=True)
class Ending:
    """How a run ended, for :meth:`Conductor._end` to settle and record."""

    status: str  # done, failed or canceled
    tasks: dict[str, TaskStats]  # its finished tasks, this run's and earlier runs'
    operators: Mapping[str, type[Operator]]  # task id → operator, for their prices
    result: RunResult | None = None  # done
    error: tuple[str, str, str | None] | None = None  # failed: code, message, task
