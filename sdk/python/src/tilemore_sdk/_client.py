"""The asyncio client. It asks before it uploads, uploads only on ``needs-file``, polls with
backoff (honouring ``Retry-After``), and retries network failures and 5xx answers — safe,
because the API is idempotent on the request's parameters."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from tilemore_sdk._errors import (
    ConnectionFailed,
    InputError,
    ServerError,
    TaskCanceledError,
    TaskFailedError,
    TilemoreError,
    UnsupportedFormatError,
    error_for,
)

FORMATS = ("jpeg", "png", "webp")
RETRY_STATUSES = {429, 500, 502, 503, 504}
Input = str | os.PathLike | bytes | bytearray | BinaryIO

log = logging.getLogger("tilemore_sdk")


@dataclass
class Result:
    """A finished thread's output."""

    thread_id: str
    data: bytes
    content_type: str
    sha256: str
    width: int
    height: int
    credits_charged: str | None
    answer: dict[str, Any] = field(repr=False, default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(self.data)
        tmp.replace(path)  # never half a file at `path`
        return path

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def read_input(value: Input) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if hasattr(value, "read"):
        data = value.read()
        if not isinstance(data, (bytes, bytearray)):
            raise InputError("the file object must be opened in binary mode", code="input_error")
        return bytes(data)
    path = Path(value)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", code="input_not_found") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file", code="input_unreadable") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})",
                         code="input_unreadable") from None


class AsyncTilemore:
    def __init__(self, api_endpoint: str, api_token: str, domain: str,
                 debug_mode: bool = False, *, meta_parts: tuple[str, ...] = ("sdk",),
                 timeout: float = 120.0, max_retries: int = 4, backoff: float = 0.25,
                 max_backoff: float = 8.0, poll_interval: float = 0.2,
                 max_poll_interval: float = 2.0, wait_timeout: float = 3600.0) -> None:
        self.endpoint = api_endpoint.rstrip("/")
        self.auth = {"Authorization": f"Token {api_token} Domain {domain}"}
        self.meta_parts = tuple(meta_parts)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.poll_interval, self.max_poll_interval = poll_interval, max_poll_interval
        self.wait_timeout = wait_timeout
        self.debug_mode = debug_mode
        if debug_mode and not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("tilemore_sdk %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.DEBUG)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncTilemore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    # -- the one call most people need -----------------------------------------------------

    async def submit(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
                     meta: Mapping[str, Any] | None = None, *,
                     output: str | os.PathLike | None = None, pipeline: str | None = None,
                     account: str | None = None) -> Result:
        """Run ``input`` through the pipeline and return the result (saved to ``output``
        too, when given). However often this is called with the same input and parameters,
        the work runs and is billed once."""
        if output_format not in FORMATS:
            raise UnsupportedFormatError(
                f"output format '{output_format}' is not one of {', '.join(FORMATS)}",
                code="unsupported_output_format")
        data = read_input(input)
        sha = hashlib.sha256(data).hexdigest()
        envelope: dict[str, Any] = {"output_format": output_format,
                                    "adjustments": dict(adjustments), "meta": dict(meta or {})}
        if pipeline is not None:
            envelope["pipeline"] = pipeline
        if account is not None:
            envelope["account"] = account
        url = f"{self.endpoint}/{'/'.join(self.meta_parts)}/submitted/{sha}/"
        answer = await self._call("POST", url, json_body=envelope)
        if answer.get("status") == "needs-file":
            def form() -> aiohttp.FormData:  # a fresh body for every attempt
                f = aiohttp.FormData()
                f.add_field("envelope", json.dumps(envelope), content_type="application/json")
                f.add_field("image", data, filename="input",
                            content_type="application/octet-stream")
                return f
            answer = await self._call("POST", url, body=form)
        thread = await self._wait(answer)
        result = await self._download(thread)
        if output is not None:
            result.save(output)
        return result

    # -- the rest of the API ---------------------------------------------------------------

    async def status(self, thread_id: str) -> dict[str, Any]:
        return await self._call("GET", f"{self.endpoint}/threads/{thread_id}")

    async def cancel(self, thread_id: str) -> dict[str, Any]:
        return await self._call("POST", f"{self.endpoint}/threads/{thread_id}/cancel")

    async def balance(self, account: str | None = None) -> dict[str, Any]:
        return await self._call("GET", self._billing("balance", account))

    async def history(self, account: str | None = None) -> list[dict[str, Any]]:
        return (await self._call("GET", self._billing("history", account)))["days"]

    def _billing(self, what: str, account: str | None) -> str:
        return f"{self.endpoint}/billing/{what}" + (f"?account={account}" if account else "")

    # -- machinery -------------------------------------------------------------------------

    async def _wait(self, answer: dict[str, Any]) -> dict[str, Any]:
        thread_id = answer["thread_id"]
        interval = self.poll_interval
        deadline = asyncio.get_running_loop().time() + self.wait_timeout
        while answer["status"] == "processing":
            if asyncio.get_running_loop().time() > deadline:
                raise TilemoreError(f"thread {thread_id} still processing after "
                                    f"{self.wait_timeout:g} s", code="wait_timeout")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self.max_poll_interval)
            answer = await self.status(thread_id)
        if answer["status"] == "failed":
            err = answer.get("error") or {}
            raise TaskFailedError(err.get("message", "the thread failed"),
                                  code=err.get("code", "failed"), thread_id=thread_id)
        if answer["status"] == "canceled":
            raise TaskCanceledError(f"thread {thread_id} was canceled", code="canceled")
        return answer

    async def _download(self, thread: dict[str, Any]) -> Result:
        info = thread["result"]
        status, headers, body = await self._send("GET", info["url"], redirect=False)
        if status in (301, 302, 303, 307, 308):  # a presigned link: no credentials to send
            status, headers, body = await self._send("GET", headers["Location"], auth=False)
        if status >= 400:
            raise error_for(status, _json_or_text(body))
        if hashlib.sha256(body).hexdigest() != info["sha256"]:
            raise ServerError("the downloaded result does not match its hash", code="corrupt")
        return Result(thread["thread_id"], body, info["content_type"], info["sha256"],
                      info["width"], info["height"], thread.get("credits_charged"), thread)

    async def _call(self, method: str, url: str, *, json_body: Any = None,
                    body: Callable[[], Any] | None = None) -> dict[str, Any]:
        status, _, raw = await self._send(method, url, json_body=json_body, body=body)
        value = _json_or_text(raw)
        if status >= 400:
            raise error_for(status, value)
        return value

    async def _send(self, method: str, url: str, *, json_body: Any = None,
                    body: Callable[[], Any] | None = None, auth: bool = True,
                    redirect: bool = True) -> tuple[int, Mapping[str, str], bytes]:
        for attempt in range(self.max_retries + 1):
            try:
                log.debug("→ %s %s%s", method, url, f" {json.dumps(json_body)}"
                          if json_body is not None else " (multipart)" if body else "")
                async with self._http().request(
                        method, url, json=json_body, data=body() if body else None,
                        headers=self.auth if auth else None,
                        allow_redirects=redirect) as resp:
                    raw = await resp.read()
                    log.debug("← %s %s", resp.status, raw[:500].decode("utf-8", "replace"))
                    if resp.status in RETRY_STATUSES and attempt < self.max_retries:
                        await asyncio.sleep(self._pause(attempt, resp.headers))
                        continue
                    return resp.status, resp.headers, raw
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("× %s %s: %r", method, url, exc)
                if attempt == self.max_retries:
                    raise ConnectionFailed(f"{method} {url} failed after {attempt + 1} attempts:"
                                           f" {exc!r}", code="connection_failed") from None
                await asyncio.sleep(self._pause(attempt, {}))
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, headers: Mapping[str, str]) -> float:
        retry_after = headers.get("Retry-After")
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
