"""The data lifecycle as a listener on the conductor's events: which blobs a thread uses,
and what becomes of them when it ends (:mod:`tilemore.lifecycle`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tilemore.lifecycle import Lifecycle
from tilemore.service.events import Listener, TaskFinished, ThreadEnded

SIZES_KEPT = 4096  # threads whose checkpoint sizes are remembered: more than run at once


class LifecycleListener(Listener):
    """Best effort, and cheap while a thread runs: no write per task. A running thread's
    checkpoints are unknown to the collector (it removes only what the database names), so
    they are safe until the thread ends; its end references and dates them all in one
    transaction. A checkpoint that went missing anyway is run again on resume, never charged
    again; an end not dated is dated by the collector's next pass, from the record."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._sizes: OrderedDict[str, dict[str, int]] = OrderedDict()  # thread → key → bytes

    def tasks_started(self, event: Any) -> None:
        if event.first:  # the ingress referenced it; one that died just after its record not
            t = event.thread
            self.lifecycle.ensure_input(t.id, t.domain, t.input_key)

    task_started = tasks_started  # the hook's name when tasks were started one at a time

    def task_finished(self, event: TaskFinished) -> None:
        s = event.stats
        if s.checkpoint and s.checkpoint_bytes:
            self._sizes.setdefault(event.thread.id, {})[s.checkpoint] = s.checkpoint_bytes
            self._sizes.move_to_end(event.thread.id)
            while len(self._sizes) > SIZES_KEPT:
                self._sizes.popitem(last=False)

    def thread_ended(self, event: ThreadEnded) -> None:
        """References and dates what the thread leaves; a done thread's checkpoints go now."""
        sizes = self._sizes.pop(event.thread.id, None)
        self.lifecycle.thread_ended(event.thread.id, event.thread.domain, event.status, sizes)
