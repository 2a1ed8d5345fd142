"""The same client, blocking. It owns a private event loop, run in the calling thread for
each call (no background thread), and closes the HTTP session, the loop and its executor on
``close()``, at the end of a ``with`` block, or — when neither was used — when the client is
garbage-collected or the interpreter exits; so no "Unclosed client session" is ever left.

One call at a time per client (calls from several threads take turns); for concurrency use
:class:`AsyncTilemore`."""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
import weakref
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

from tilemore_sdk._client import AsyncTilemore, ThreadRef
from tilemore_sdk._errors import TilemoreError
from tilemore_sdk._io import Input, Progress
from tilemore_sdk._types import (
    Balance,
    HistoryDay,
    Operation,
    Payment,
    Result,
    SubAccount,
    Thread,
    ThreadPage,
    Token,
)

T = TypeVar("T")


def _shutdown(loop: asyncio.AbstractEventLoop, client: AsyncTilemore) -> None:
    def close() -> None:
        if loop.is_closed():
            return
        try:
            loop.run_until_complete(client.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        close()
        return
    # Collected inside someone's running loop: ours cannot run in this thread.
    helper = threading.Thread(target=close, name="tilemore-sdk-close")
    helper.start()
    helper.join()


class Tilemore:
    """``Tilemore(api_endpoint=..., api_token=..., domain=..., debug_mode=False)``; every
    argument may come from the environment (see :class:`AsyncTilemore`)."""

    def __init__(self, api_endpoint: str | None = None, api_token: str | None = None,
                 domain: str | None = None, debug_mode: bool = False, **options: Any) -> None:
        self._client = AsyncTilemore(api_endpoint, api_token, domain, debug_mode, **options)
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closer = weakref.finalize(self, _shutdown, self._loop, self._client)

    @property
    def client(self) -> AsyncTilemore:
        return self._client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise TilemoreError("the blocking Tilemore client cannot run inside an event loop;"
                                " use AsyncTilemore there", code="inside_event_loop")
        with self._lock:
            if not self._closer.alive:
                coro.close()
                raise TilemoreError("this client is closed", code="closed")
            return self._loop.run_until_complete(coro)

    # -- threads ---------------------------------------------------------------------------

    def create(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
               meta: Mapping[str, Any] | None = None, **options: Any) -> Thread:
        return self._run(self._client.create(input, output_format, adjustments, meta,
                                             **options))

    def wait(self, thread: ThreadRef, *, timeout: float | None = None,
             check: bool = True) -> Thread:
        return self._run(self._client.wait(thread, timeout=timeout, check=check))

    def run(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
            meta: Mapping[str, Any] | None = None, **options: Any) -> Result:
        return self._run(self._client.run(input, output_format, adjustments, meta, **options))

    def submit(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
               meta: Mapping[str, Any] | None = None, **options: Any) -> Result:
        return self._run(self._client.submit(input, output_format, adjustments, meta,
                                             **options))

    def download(self, thread: ThreadRef, output: str | os.PathLike[str] | None = None, *,
                 progress: Progress | None = None) -> Result:
        return self._run(self._client.download(thread, output, progress=progress))

    def get(self, thread_id: str) -> Thread:
        return self._run(self._client.get(thread_id))

    def status(self, thread_id: str) -> Thread:
        return self._run(self._client.status(thread_id))

    def cancel(self, thread_id: ThreadRef) -> Thread:
        return self._run(self._client.cancel(thread_id))

    def retry(self, thread_id: ThreadRef) -> Thread:
        return self._run(self._client.retry(thread_id))

    def list(self, *, status: str | None = None,
             meta_part: str | Sequence[str] | None = None, account: str | None = None,
             created_since: datetime | date | str | float | None = None,
             limit: int | None = None, cursor: str | None = None) -> ThreadPage:
        return self._run(self._client.list(status=status, meta_part=meta_part,
                                           account=account, created_since=created_since,
                                           limit=limit, cursor=cursor))

    def iter_threads(self, **filters: Any) -> Iterator[Thread]:
        """Every thread ``list(**filters)`` finds, a page at a time."""
        cursor = None
        while True:
            page = self.list(**filters, cursor=cursor)
            yield from page.threads
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- billing ---------------------------------------------------------------------------

    def balance(self, account: str | None = None) -> Balance:
        return self._run(self._client.balance(account))

    def history(self, account: str | None = None) -> builtins.list[HistoryDay]:
        return self._run(self._client.history(account))

    def operations(self, day: date | str | None = None, account: str | None = None
                   ) -> builtins.list[Operation]:
        return self._run(self._client.operations(day, account))

    def create_subaccount(self, name: str) -> SubAccount:
        return self._run(self._client.create_subaccount(name))

    def subaccounts(self) -> builtins.list[SubAccount]:
        return self._run(self._client.subaccounts())

    def create_subaccount_token(self, name: str) -> Token:
        return self._run(self._client.create_subaccount_token(name))

    def record_payment(self, name: str, payment_id: str, amount: str) -> Payment:
        return self._run(self._client.record_payment(name, payment_id, amount))

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closer()

    def __enter__(self) -> Tilemore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
