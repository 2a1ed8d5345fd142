"""Long polls: ``GET /threads/{id}?wait=S``, and ``Prefer: wait=S`` on a submission (RFC 7240,
as Replicate's API has it), answer when the thread ends or after S seconds, whichever comes
first. A client then makes one request where it made a poll every few milliseconds, and each
poll cost the Serve proxy, the ingress and a database read.

One ingress replica's waiting requests share one read per tick: the status of every thread
waited for, in one query (:meth:`ThreadStore.statuses`), on the thread pool, never on the
event loop. A replica that already holds :data:`MAX_WAITING` waits answers the next one at
once, as if it had not asked to wait: the client polls, as it did before."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from tilemore.errors import TilemoreError

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60  # as Replicate's; a proxy in front may cut an idle request sooner
MAX_WAITING = 10_000  # long polls one replica holds (a future and a set entry each)
TICK_SECONDS = 0.005  # between reads: half of it, on average, is added to the answer
BATCH = 500  # ids in one query (SQLite allows 32,766 parameters; a short statement)
ERROR_PAUSE_SECONDS = 1.0  # after a failed read: the database is not asked 200 times a second

_WAIT = re.compile(r"^(([0-5]?[0-9])(\.[0-9]{1,3})?|60(\.0{1,3})?)$")  # 0 to 60
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]{1,4})\"?(?=$|[,;\s])",
                          re.IGNORECASE)
MAX_PREFER = 256  # characters of a Prefer header read


def wait_query(value: str | None) -> float:
    """``?wait=``: seconds, 0 to 60, at most three decimals; absent: 0. Anything else is
    400 ``invalid_wait`` (an asked wait that is not done would surprise)."""
    if value is None:
        return 0.0
    if not _WAIT.fullmatch(value):
        raise InvalidWait(f"wait must be seconds from 0 to {MAX_WAIT_SECONDS}, e.g. wait=30; "
                          f"got {value[:20]!r}")
    return float(value)


def prefer_wait(header: str | None) -> int:
    """``Prefer: wait=N`` (whole seconds, RFC 7240), capped at 60; 0 without one. A
    preference the server cannot read is ignored, as the RFC says, never refused."""
    if not header:
        return 0
    match = _PREFER_WAIT.search(header[:MAX_PREFER])
    return min(int(match.group(1)), MAX_WAIT_SECONDS) if match else 0


class InvalidWait(TilemoreError):
    code = "invalid_wait"  # 400


class Waiter:
    """The long polls of one replica's event loop. ``read`` gives the status of each id it
    is asked about that exists; an id it leaves out (a record gone) ends the wait too."""

    def __init__(self, read: Callable[[list[str]], dict[str, str]], *,
                 tick: float = TICK_SECONDS, max_waiting: int = MAX_WAITING) -> None:
        self._read = read
        self._tick = tick
        self._max = max_waiting
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._count = 0
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return self._count

    async def until_ended(self, thread_id: str, timeout: float) -> bool:
        """True once the thread is no longer ``processing``; False when ``timeout`` passed
        first, or the replica holds as many waits as it takes."""
        if timeout <= 0 or self._count >= self._max:
            return False
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(thread_id, set()).add(ended)
        self._count += 1
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = loop.create_task(self._watch())
        try:
            done, _ = await asyncio.wait({ended}, timeout=timeout)
            return bool(done)
        finally:
            self._count -= 1
            futures = self._waiting.get(thread_id)
            if futures is not None:
                futures.discard(ended)
                if not futures:
                    del self._waiting[thread_id]

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(self._tick)
            ids = list(self._waiting)
            for start in range(0, len(ids), BATCH):
                chunk = ids[start:start + BATCH]
                try:
                    statuses = await run_in_threadpool(self._read, chunk)
                except Exception:  # noqa: BLE001 - the waits time out; the next tick retries
                    log.warning("long polls: reading %d statuses failed", len(chunk),
                                exc_info=True)
                    await asyncio.sleep(ERROR_PAUSE_SECONDS)
                    break
                for thread_id in chunk:
                    if statuses.get(thread_id) != "processing":
                        for ended in self._waiting.pop(thread_id, ()):
                            if not ended.done():
                                ended.set_result(None)
