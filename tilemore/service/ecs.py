"""Failed tasks' errors as Elastic Common Schema (ECS) JSON lines, for Elasticsearch and
Kibana: one line per error to the ``tilemore.errors.ecs`` logger and, when
``TILEMORE_ERRORS_LOG_PATH`` is set, appended to that file for Filebeat or Elastic Agent.

The layout follows the ecs-logging spec: ``@timestamp``, ``log.level``, ``message`` first,
``log.level`` and ``ecs.version`` as dotted top-level keys, every other field nested.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tilemore.store import ErrorRecord

LOGGER = "tilemore.errors.ecs"
ECS_VERSION = "8.11.0"
DATASET = "tilemore.errors"

log = logging.getLogger(LOGGER)


def ecs_document(error: ErrorRecord, trace_id: str | None = None) -> dict[str, Any]:
    """The ECS document of one failed run of a task; ``trace.id`` only when one is given."""
    what = "failed" if error.final else f"failed (attempt {error.attempt}; it runs again)"
    doc: dict[str, Any] = {
        "@timestamp": datetime.fromtimestamp(error.at, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "log.level": "error" if error.final else "warning",
        "message": f"task {error.task_id} ({error.operator}) of thread {error.thread_id} "
                   f"{what}: {error.error_type}: {error.message}",
        "ecs.version": ECS_VERSION,
        "error": {"type": error.error_type, "message": error.message,
                  "stack_trace": error.traceback},
        "event": {"kind": "event", "category": ["process"], "type": ["error"],
                  "outcome": "failure", "dataset": DATASET,
                  "action": "task-failed" if error.final else "task-retried"},
        "service": {"name": "tilemore"},
        "log": {"logger": LOGGER},
        # ECS labels are keywords: every value a string.
        "labels": {"domain": error.domain, "account": error.account,
                   "thread_id": error.thread_id, "task_id": error.task_id,
                   "operator": error.operator, "attempt": str(error.attempt),
                   "final": str(error.final).lower()},
    }
    if trace_id:
        doc["trace"] = {"id": trace_id}
    return doc


class EcsErrorLog:
    """Writes each error as one ECS line: to the logger always, and to ``path`` if set."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def emit(self, error: ErrorRecord, trace_id: str | None = None) -> None:
        line = json.dumps(ecs_document(error, trace_id), ensure_ascii=False)
        log.log(logging.ERROR if error.final else logging.WARNING, line)
        if self.path is not None:
            _append(self.path, line)


def _append(path: Path, line: str) -> None:
    # Opened per line: a rotated file (logrotate, a shipper's own) is picked up at once.
    # One write() with O_APPEND: lines from several processes never interleave.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:  # a full or read-only disk must not fail the thread
        logging.getLogger("tilemore.conductor").warning(
            "could not append to the ECS error log %s: %s", path, exc)
