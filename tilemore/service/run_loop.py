"""A conductor's event loop and its I/O threads: every run is a task on the one loop, which
waits for the tasks' backend handles without a thread; whatever blocks (the registry, the
blob store, the billing actor, the listeners) runs on a few I/O threads, never on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

IO_THREADS = 16  # the runs' registry writes, blob reads and billing calls, at once
CLOSE_SECONDS = 2.0  # how long closing waits for the runs to give their leases back
T = TypeVar("T")


class RunLoop:
    def __init__(self, io_threads: int = IO_THREADS) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._io = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="conductor-io")

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, on a thread of its own, started at first use."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=_serve, args=(self._loop,), name="conductor-loop",
                                 daemon=True).start()
            return self._loop

    def start(self, run: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``run`` on the loop from another thread."""
        return asyncio.run_coroutine_threadsafe(run, self.loop())

    def wait(self, run: Coroutine[Any, Any, T]) -> T:
        """Run ``run`` on the loop from another thread, and wait for its result."""
        return self.start(run).result()

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the I/O threads, awaited from the loop."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._io, functools.partial(ctx.run, fn, *args, **kwargs))

    def close(self) -> None:
        """Cancel the runs, let each give its lease back (briefly), and stop."""
        with self._lock:  # closed once: a second close finds no loop
            loop, self._loop = self._loop, None
        if loop is not None:
            stopping = asyncio.run_coroutine_threadsafe(_stop_tasks(), loop)
            with contextlib.suppress(Exception):  # runs still giving leases back: they run out
                stopping.result(CLOSE_SECONDS)
            loop.call_soon_threadsafe(loop.stop)
        self._io.shutdown(wait=False, cancel_futures=True)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:  # stopped by close()
        loop.close()


async def _stop_tasks() -> None:
    here = asyncio.current_task()
    runs = [t for t in asyncio.all_tasks() if t is not here]
    for t in runs:
        t.cancel()
    if runs:
        await asyncio.wait(runs, timeout=CLOSE_SECONDS / 2)
