"""The data lifecycle as a listener on the conductor's events: which blobs a thread uses,
and what becomes of them when it ends (:mod:`tilemore.lifecycle`)."""

from __future__ import annotations

from typing import Any

from tilemore.lifecycle import Lifecycle
from tilemore.service.events import Listener, TaskFinished, ThreadEnded


class LifecycleListener(Listener):
    """Best effort: a reference not recorded now is recorded by the collector's next pass
    (an ended thread's blobs, from its record), and a checkpoint that went missing is run
    again on resume, never charged again."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def tasks_started(self, event: Any) -> None:
        if event.first:  # the ingress referenced it too; a hand-off after its crash did not
            t = event.thread
            self.lifecycle.refer(t.id, t.domain, "input", t.input_key)

    task_started = tasks_started  # the hook's name when tasks were started one at a time

    def task_finished(self, event: TaskFinished) -> None:
        s = event.stats
        if s.checkpoint:
            self.lifecycle.refer(event.thread.id, event.thread.domain, "checkpoint",
                                 s.checkpoint, s.checkpoint_bytes)

    def thread_ended(self, event: ThreadEnded) -> None:
        """Dates what the thread leaves; a done thread's checkpoints go now."""
        self.lifecycle.thread_ended(event.thread.id, event.thread.domain, event.status)
