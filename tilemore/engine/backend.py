"""The seam between graph logic and the machinery that runs tasks.

The conductor (:mod:`tilemore.pipeline.run`) only speaks :class:`Backend`. Two implement it:
:class:`LocalBackend` here (threads in this process: unit tests and benchmark baselines) and
:class:`tilemore.engine.ray_backend.RayBackend` (operator actors on a Ray cluster, in pools
:mod:`tilemore.engine.ray_pools` starts and scales).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from tilemore.engine.host import OperatorHost
from tilemore.operator import Operator, OperatorParams
from tilemore.settings import Settings

H = TypeVar("H")


class ReplicaLost(RuntimeError):
    """The replica running a task went away with its node (or the task's input did). Not the
    operator's fault: the task runs again on a replica that is up, outside its retry policy."""


class Backend(Protocol[H]):
    """Runs operator tasks; ``H`` is its handle type (a Future, a Ray ObjectRef)."""

    def prepare(self, operators: Iterable[type[Operator]]) -> None:
        """Start replicas of these operators now, so set-up errors surface before work."""

    def put(self, value: Any) -> H: ...

    def call(
        self, task_id: str, operator: type[Operator], params: OperatorParams, inputs: Sequence[H]
    ) -> tuple[H, H]:
        """Start a task once its inputs are ready; returns (output, :class:`TaskStats`)."""

    def plan(self, operator: type[Operator], params: OperatorParams, original: H,
             branches: list[str]) -> H:
        """Ask a selector which ``branches`` are worth running on ``original`` (a handle to
        the dict of :meth:`OperatorHost.plan`, or to None)."""

    def wait(self, handles: Sequence[H], timeout: float | None = None) -> list[H]:
        """Block until at least one handle is ready (or the timeout); return the ready ones."""

    def future(self, handle: H) -> Future:
        """A future done when the handle is ready: what an event loop waits on."""

    def get(self, handle: H) -> Any:
        """The value, or the task's own exception raised as itself."""

    def close(self) -> None: ...


class LocalBackend:
    """Every task on a thread of this process; branches overlap as threads allow."""

    def __init__(self, settings: Settings | None = None, max_workers: int = 8) -> None:
        self.settings = settings or Settings()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tilemore")
        self._hosts: dict[type[Operator], OperatorHost] = {}
        self._lock = threading.Lock()

    def host(self, operator: type[Operator]) -> OperatorHost:
        with self._lock:
            if operator not in self._hosts:
                self._hosts[operator] = OperatorHost(operator, self.settings)
            return self._hosts[operator]

    def prepare(self, operators: Iterable[type[Operator]]) -> None:
        for op in operators:
            self.host(op)

    def put(self, value: Any) -> Future:
        done: Future = Future()
        done.set_result(value)
        return done

    def call(
        self, task_id: str, operator: type[Operator], params: OperatorParams,
        inputs: Sequence[Future],
    ) -> tuple[Future, Future]:
        output: Future = Future()
        stats: Future = Future()
        remaining = [len(inputs)]
        lock = threading.Lock()

        def start() -> None:
            failed = next((f.exception() for f in inputs if f.exception()), None)
            if failed is not None:
                output.set_exception(failed)
                stats.set_exception(failed)
                return
            self._pool.submit(run)

        def run() -> None:
            try:
                value, st = self.host(operator).run(task_id, params, *(f.result() for f in inputs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                output.set_exception(exc)
                stats.set_exception(exc)
            else:
                output.set_result(value)
                stats.set_result(st)

        def input_done(_: Future) -> None:
            with lock:
                remaining[0] -= 1
                ready = remaining[0] == 0
            if ready:
                start()

        if not inputs:
            start()
        for f in inputs:
            f.add_done_callback(input_done)
        return output, stats

    def plan(self, operator: type[Operator], params: OperatorParams, original: Future,
             branches: list[str]) -> Future:
        # Started once its input is ready, never blocking a worker while it waits for it:
        # a pool of waiting plans would starve the tasks they wait for.
        verdict: Future = Future()

        def run() -> None:
            try:
                verdict.set_result(self.host(operator).plan(params, original.result(),
                                                            branches))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                verdict.set_exception(exc)

        original.add_done_callback(lambda _: self._pool.submit(run))
        return verdict

    def wait(self, handles: Sequence[Future], timeout: float | None = None) -> list[Future]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def future(self, handle: Future) -> Future:
        return handle

    def get(self, handle: Future) -> Any:
        return handle.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
