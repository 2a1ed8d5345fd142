"""The conductor runs its threads as tasks on one event loop: many threads in flight cost no
OS thread each. A real store and ledger (SQLite and PostgreSQL), the in-process backend."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

from tilemore.billing.service import Billing
from tilemore.engine import LocalBackend
from tilemore.service.run_loop import IO_THREADS

RUNS = 48  # more than the I/O threads, the loop and the backend's workers together


class HeldBackend:
    """The in-process backend, but no task's result is handed back until ``go`` is set: a
    run waits for it as it waits for a slow operator on Ray, holding no thread."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner, self.go = inner, threading.Event()
        self.calls = 0
        self._held: list[tuple[Future, Future]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def call(self, task_id, operator, params, inputs):
        out, st = self.inner.call(task_id, operator, params, inputs)
        held_out, held_st = Future(), Future()
        with self._lock:
            self.calls += 1
            if not self.go.is_set():
                self._held.append((out, held_out))
                self._held.append((st, held_st))
                return held_out, held_st
        return out, st

    def release(self) -> None:
        with self._lock:
            self.go.set()
            held, self._held = self._held, []
        for inner, outer in held:
            inner.add_done_callback(lambda f, o=outer: _copy(f, o))


def _copy(src: Future, dst: Future) -> None:
    if src.exception() is not None:
        dst.set_exception(src.exception())
    else:
        dst.set_result(src.result())


def test_many_threads_in_flight_share_one_event_loop(parts):
    billing = Billing(parts.ledger)
    local = LocalBackend(parts.settings)
    held = HeldBackend(local)
    try:
        conductor = parts.conductor(billing, held, concurrency=RUNS)
        ids = [parts.accept(f"k-{i}", hold="0.1").id for i in range(RUNS)]
        before = {t.name for t in threading.enumerate()}
        assert conductor.claim() == RUNS
        deadline = time.monotonic() + 20
        while held.calls < RUNS and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held.calls >= RUNS  # every thread is running: its first task handed over

        async def runs_on_the_loop() -> int:
            return len(asyncio.all_tasks()) - 1  # less this one
        loop = conductor._runs.loop()  # noqa: SLF001 - what the runs are tasks of
        assert asyncio.run_coroutine_threadsafe(runs_on_the_loop(), loop).result() == RUNS
        new = {t.name for t in threading.enumerate()} - before
        # the loop, at most IO_THREADS I/O threads, and the in-process backend's workers
        assert len([n for n in new if n.startswith("conductor")]) <= IO_THREADS + 1
        assert len(new) < RUNS

        held.release()
        deadline = time.monotonic() + 30
        while conductor.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {parts.store.get_thread(i).status for i in ids} == {"done"}
        assert parts.ledger.held("acme") == 0  # each hold went back as its thread ended
    finally:
        billing.close()
        local.close()
