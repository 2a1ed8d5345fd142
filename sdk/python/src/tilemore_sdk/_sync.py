"""The same client, blocking: it runs :class:`AsyncTilemore` on a private event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tilemore_sdk._client import AsyncTilemore, Result

T = TypeVar("T")


class Tilemore:
    """``Tilemore(api_endpoint=..., api_token=..., domain=..., debug_mode=False)``."""

    def __init__(self, api_endpoint: str, api_token: str, domain: str,
                 debug_mode: bool = False, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tilemore-sdk",
                                        daemon=True)
        self._thread.start()
        self._client = AsyncTilemore(api_endpoint, api_token, domain, debug_mode, **options)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def submit(self, input: Any, output_format: str, adjustments: dict[str, Any],
               meta: dict[str, Any] | None = None, **options: Any) -> Result:
        return self._run(self._client.submit(input, output_format, adjustments, meta, **options))

    def status(self, thread_id: str) -> dict[str, Any]:
        return self._run(self._client.status(thread_id))

    def cancel(self, thread_id: str) -> dict[str, Any]:
        return self._run(self._client.cancel(thread_id))

    def balance(self, account: str | None = None) -> dict[str, Any]:
        return self._run(self._client.balance(account))

    def history(self, account: str | None = None) -> list[dict[str, Any]]:
        return self._run(self._client.history(account))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> Tilemore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
