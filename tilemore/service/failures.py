"""What the conductor keeps of a failed task: every failed run — each retried attempt and
the failure that ends a thread — goes into the error index (searchable by the API and the
CLI) and out as an ECS log line (:mod:`tilemore.service.ecs`).

Recording is best effort: an index that cannot be written loses a search entry, never the
thread it belongs to (the thread's own record says how it ended).
"""

from __future__ import annotations

import builtins
import logging
import time

from tilemore.pipeline.run import Retry, TaskFailed
from tilemore.service.ecs import EcsErrorLog
from tilemore.store import ErrorIndex, ErrorRecord, ThreadRecord

log = logging.getLogger("tilemore.conductor")


def error_type(error: BaseException) -> str:
    """``ZeroDivisionError`` for builtins, ``package.module.Name`` for the rest."""
    cls = type(error)
    if getattr(builtins, cls.__name__, None) is cls:
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class FailureRecorder:
    def __init__(self, index: ErrorIndex | None = None,
                 ecs: EcsErrorLog | None = None) -> None:
        self.index = index
        self.ecs = ecs or EcsErrorLog()

    def retried(self, thread: ThreadRecord, retry: Retry, trace_id: str | None = None) -> None:
        """A run of a task failed and its policy runs it again. ``trace_id``: the thread's
        OpenTelemetry trace, for the ECS line (logs and traces meet on it in Kibana)."""
        self._record(thread, retry.task.id, retry.task.operator.name, retry.failure.error,
                     retry.failure.traceback, retry.failures, final=False, trace_id=trace_id)

    def failed(self, thread: ThreadRecord, exc: TaskFailed, trace_id: str | None = None) -> None:
        """A task failed for good: its thread ends ``failed``."""
        self._record(thread, exc.task_id, exc.operator, exc.error, exc.traceback,
                     exc.attempts, final=True, trace_id=trace_id)

    def _record(self, thread: ThreadRecord, task_id: str, operator: str,
                failure: BaseException, traceback: str, attempt: int, *, final: bool,
                trace_id: str | None) -> None:
        error = ErrorRecord(
            domain=thread.domain, account=thread.account, thread_id=thread.id,
            task_id=task_id, operator=operator, error_type=error_type(failure),
            message=str(failure), traceback=traceback or "", attempt=attempt, final=final,
            at=time.time())
        self.ecs.emit(error, trace_id)
        if self.index is None:
            return
        try:
            self.index.record_error(error)
        except Exception as exc:  # noqa: BLE001 - the database down, a full disk…
            log.warning("thread %s: task %s's error was not indexed: %s", thread.id, task_id,
                        exc)
