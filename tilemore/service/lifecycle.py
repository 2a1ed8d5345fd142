"""The data lifecycle as a listener on the conductor's events: which blobs a thread uses,
and what becomes of them when it ends (:mod:`tilemore.lifecycle`)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from tilemore.lifecycle import Lifecycle
from tilemore.service.events import Listener, TaskFinished, ThreadEnded
from tilemore.store import AlsoWrite, ThreadRecord

log = logging.getLogger("tilemore.lifecycle")

SIZES_KEPT = 4096  # threads whose checkpoint sizes are remembered: more than run at once


class LifecycleListener(Listener):
    """Cheap while a thread runs: no write per task. A running thread's checkpoints are
    unknown to the collector (it removes only what the database names), so they are safe
    until the thread ends; its end references and dates them all, in the transaction that
    records the end (:meth:`ending`, which the conductor hands the registry). A checkpoint
    that went missing anyway is run again on resume, never charged again; a thread ended
    some other way (given up on) is dated by the collector's next pass, from the record."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._sizes: OrderedDict[str, dict[str, int]] = OrderedDict()  # thread → key → bytes
        # ended threads that stored a checkpoint: the others have none to collect (most, with
        # checkpoints only where they pay), so their end reads nothing more
        self._stored: OrderedDict[str, None] = OrderedDict()

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

    def ending(self, thread: ThreadRecord, status: str) -> AlsoWrite:
        """The lifecycle's writes for the thread's end, for the registry's end transaction."""
        sizes = self._sizes.pop(thread.id, None)
        if sizes or any(t.checkpoint_key for t in thread.tasks):  # this run's, or earlier ones'
            self._stored[thread.id] = None
            while len(self._stored) > SIZES_KEPT:  # ends never recorded: forgotten in time
                self._stored.popitem(last=False)
        return self.lifecycle.ending(thread.domain, status, sizes)

    def thread_ended(self, event: ThreadEnded) -> None:
        """A done thread's checkpoints go now (best effort: the collector removes them
        later otherwise)."""
        stored = event.thread.id in self._stored
        self._stored.pop(event.thread.id, None)
        if event.status != "done" or not stored:
            return
        try:
            self.lifecycle.checkpoints_done(event.thread.id)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("thread %s: checkpoints not collected now (%s)", event.thread.id, exc)
