"""The asyncio client. It asks before it uploads, uploads only on ``needs-file`` (streamed
from disk), polls with backoff, honours ``Retry-After`` and the ``RateLimit`` headers, and
retries network failures, 429 and 5xx answers — safe, because the API is idempotent on the
request's parameters."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import hashlib
import io
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from tilemore_sdk._errors import (
    ConnectionFailed,
    ServerError,
    TaskCanceledError,
    TaskFailedError,
    TilemoreError,
    UnsupportedFormatError,
    WaitTimeout,
    error_for,
)
from tilemore_sdk._io import CHUNK, Input, Progress, Source, prepare
from tilemore_sdk._ratelimit import RateLimit
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

FORMATS = ("jpeg", "png", "webp")
RETRY_STATUSES = {429, 500, 502, 503, 504}
REDIRECTS = (301, 302, 303, 307, 308)
ENV_ENDPOINT, ENV_TOKEN = "TILEMORE_API_ENDPOINT", "TILEMORE_API_TOKEN"
ENV_DOMAIN = "TILEMORE_DOMAIN"
MAX_ERROR_BODY = 64 * 1024  # an error answer is read at most this far
LONG_POLL_SECONDS = 20.0  # one long poll; a proxy in front usually allows 60 s idle

log = logging.getLogger("tilemore_sdk")
ThreadRef = Thread | str


class AsyncTilemore:
    """``AsyncTilemore(api_endpoint, api_token, domain=None)``; each argument defaults to its
    environment variable (``TILEMORE_API_ENDPOINT``, ``TILEMORE_API_TOKEN``,
    ``TILEMORE_DOMAIN``). Without a domain the token is sent as ``Bearer`` (it names its
    domain); with one, as the guide's ``Token … Domain …``."""

    def __init__(self, api_endpoint: str | None = None, api_token: str | None = None,
                 domain: str | None = None, debug_mode: bool = False, *,
                 meta_parts: tuple[str, ...] = ("sdk",), timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 0.25, max_backoff: float = 8.0,
                 max_rate_limit_wait: float = 60.0, poll_interval: float = 0.2,
                 max_poll_interval: float = 2.0, wait_timeout: float = 3600.0) -> None:
        endpoint = api_endpoint or os.environ.get(ENV_ENDPOINT)
        token = api_token or os.environ.get(ENV_TOKEN)
        domain = domain or os.environ.get(ENV_DOMAIN) or None
        if not endpoint or not token:
            raise TilemoreError(f"give api_endpoint and api_token, or set {ENV_ENDPOINT} and "
                                f"{ENV_TOKEN}", code="not_configured")
        self.endpoint = endpoint.rstrip("/")
        self.auth = {"Authorization": f"Token {token} Domain {domain}" if domain
                     else f"Bearer {token}"}
        self.meta_parts = tuple(meta_parts)
        # No total: a large upload or download may take long; each read and connect may not.
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.max_rate_limit_wait = max_rate_limit_wait
        self.poll_interval, self.max_poll_interval = poll_interval, max_poll_interval
        self.wait_timeout = wait_timeout
        self.debug_mode = debug_mode
        if debug_mode and not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("tilemore_sdk %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.DEBUG)
        self._session: aiohttp.ClientSession | None = None
        self._not_before = 0.0  # loop time before which no request is sent (RateLimit)

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

    # -- threads ---------------------------------------------------------------------------

    async def create(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
                     meta: Mapping[str, Any] | None = None, *, pipeline: str | None = None,
                     account: str | None = None, progress: Progress | None = None) -> Thread:
        """Start (or find) the thread for ``input`` and these parameters; returns at once.
        The input is hashed, then uploaded from disk only if the service asks for it."""
        if output_format not in FORMATS:
            raise UnsupportedFormatError(
                f"output format '{output_format}' is not one of {', '.join(FORMATS)}",
                code="unsupported_output_format")
        source = await prepare(input, progress)
        try:
            return await self._create(source, output_format, adjustments, meta, pipeline,
                                      account, progress)
        finally:
            source.close()

    async def _create(self, source: Source, output_format: str,
                      adjustments: Mapping[str, Any], meta: Mapping[str, Any] | None,
                      pipeline: str | None, account: str | None,
                      progress: Progress | None) -> Thread:
        envelope: dict[str, Any] = {"output_format": output_format,
                                    "adjustments": dict(adjustments), "meta": dict(meta or {})}
        if pipeline is not None:
            envelope["pipeline"] = pipeline
        if account is not None:
            envelope["account"] = account
        url = f"{self.endpoint}/{'/'.join(self.meta_parts)}/submitted/{source.sha256}/"
        answer = await self._call("POST", url, json_body=envelope)
        if answer.get("status") == "needs-file":
            def form() -> aiohttp.FormData:  # a fresh body for every attempt
                f = aiohttp.FormData()
                f.add_field("envelope", json.dumps(envelope), content_type="application/json")
                f.add_field("image", source.part(progress), filename="input",
                            content_type="application/octet-stream")
                return f
            answer = await self._call("POST", url, body=form)
        return Thread.of(answer)

    async def wait(self, thread: ThreadRef, *, timeout: float | None = None,
                   check: bool = True) -> Thread:
        """Wait until the thread ends: long polls (``GET /threads/{id}?wait=S``), each
        answered when the thread ends; between polls the service answered early (it held
        too many waits) the interval backs off. With ``check`` (the default) a failed or
        canceled thread raises :class:`TaskFailedError` / :class:`TaskCanceledError`."""
        current = thread if isinstance(thread, Thread) else await self.get(thread)
        interval = self.poll_interval
        loop = asyncio.get_running_loop()
        limit = self.wait_timeout if timeout is None else timeout
        deadline = loop.time() + limit
        while current.status == "processing":
            left = deadline - loop.time()
            if left <= 0:
                raise WaitTimeout(f"thread {current.id} still processing after {limit:g} s",
                                  code="wait_timeout")
            seconds = min(LONG_POLL_SECONDS, left, (self.timeout.sock_read or 120.0) / 2)
            asked = loop.time()
            current = Thread.of(await self._call(
                "GET", f"{self.endpoint}/threads/{_id(current.id)}?wait={seconds:.3f}"))
            if current.status == "processing" and loop.time() - asked < 0.9 * seconds:
                await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
                interval = min(interval * 1.5, self.max_poll_interval)
        if check and current.status == "failed":
            err = current.error or {}
            raise TaskFailedError(err.get("message", "the thread failed"),
                                  code=err.get("code", "failed"), thread_id=current.id)
        if check and current.status == "canceled":
            raise TaskCanceledError(f"thread {current.id} was canceled", code="canceled")
        return current

    async def run(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
                  meta: Mapping[str, Any] | None = None, *,
                  output: str | os.PathLike[str] | None = None, pipeline: str | None = None,
                  account: str | None = None, progress: Progress | None = None,
                  timeout: float | None = None) -> Result:
        """``create`` + ``wait`` + ``download``: the result, streamed to ``output`` when
        given (else held in memory). However often this is called with the same input and
        parameters, the work runs and is billed once."""
        thread = await self.create(input, output_format, adjustments, meta,
                                   pipeline=pipeline, account=account, progress=progress)
        done = await self.wait(thread, timeout=timeout)
        return await self.download(done, output, progress=progress)

    async def submit(self, input: Input, output_format: str, adjustments: Mapping[str, Any],
                     meta: Mapping[str, Any] | None = None, **options: Any) -> Result:
        """The guide's call: the same as :meth:`run`."""
        return await self.run(input, output_format, adjustments, meta, **options)

    async def get(self, thread_id: str) -> Thread:
        return Thread.of(await self._call("GET", f"{self.endpoint}/threads/{_id(thread_id)}"))

    async def status(self, thread_id: str) -> Thread:
        """The thread now (``get``; kept for the SDK's first users)."""
        return await self.get(thread_id)

    async def cancel(self, thread_id: ThreadRef) -> Thread:
        return Thread.of(await self._call(
            "POST", f"{self.endpoint}/threads/{_id(thread_id)}/cancel"))

    async def retry(self, thread_id: ThreadRef) -> Thread:
        """Run a failed, canceled or expired thread again (``POST /threads/{id}/retry``)."""
        return Thread.of(await self._call(
            "POST", f"{self.endpoint}/threads/{_id(thread_id)}/retry"))

    async def list(self, *, status: str | None = None,
                   meta_part: str | Sequence[str] | None = None, account: str | None = None,
                   created_since: datetime | date | str | float | None = None,
                   limit: int | None = None, cursor: str | None = None) -> ThreadPage:
        """One page of the caller's threads, newest first (``GET /threads``); pass the page's
        ``next_cursor`` as ``cursor`` for the next. ``meta_part``: one or several, all of
        which the threads were submitted under; ``account``: a sub-account's name."""
        parts = [meta_part] if isinstance(meta_part, str) else meta_part
        since = created_since.isoformat() if isinstance(created_since, (date, datetime)) \
            else created_since
        query = {"status": status, "meta_part": parts, "account": account,
                 "created_since": since, "limit": limit, "cursor": cursor}
        page = await self._call("GET", _url(f"{self.endpoint}/threads", query))
        return ThreadPage([Thread.of(t) for t in page["threads"]], page.get("next_cursor"))

    async def iter_threads(self, **filters: Any) -> AsyncIterator[Thread]:
        """Every thread ``list(**filters)`` finds, page after page."""
        cursor = None
        while True:
            page = await self.list(**filters, cursor=cursor)
            for thread in page.threads:
                yield thread
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def download(self, thread: ThreadRef, output: str | os.PathLike[str] | None = None, *,
                       progress: Progress | None = None) -> Result:
        """A done thread's result: streamed to ``output`` (written whole or not at all)
        when given, else into memory; its SHA-256 checked either way."""
        if not isinstance(thread, Thread) or thread.result is None:
            thread = await self.get(thread.id if isinstance(thread, Thread) else thread)
        info = thread.result
        if info is None:
            raise TilemoreError(f"thread {thread.id} has no result ({thread.status})",
                                code="no_result")
        path = Path(output) if output is not None else None

        async def sink(resp: aiohttp.ClientResponse) -> tuple[str, bytes | None]:
            total = resp.content_length or info.bytes or None
            h, got = hashlib.sha256(), 0
            part = path.with_name(f".{path.name}.part") if path is not None else None
            out: Any = await asyncio.to_thread(part.open, "wb") if part else io.BytesIO()
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    h.update(chunk)
                    if part:
                        await asyncio.to_thread(out.write, chunk)
                    else:
                        out.write(chunk)
                    got += len(chunk)
                    if progress is not None:
                        progress("download", got, total)
            except BaseException:
                out.close()
                if part:
                    part.unlink(missing_ok=True)
                raise
            if h.hexdigest() != info.sha256:
                out.close()
                if part:
                    part.unlink(missing_ok=True)
                raise ServerError("the downloaded result does not match its hash",
                                  code="corrupt")
            if part and path is not None:
                out.close()
                part.replace(path)  # never half a file at `path`
                return h.hexdigest(), None
            return h.hexdigest(), out.getvalue()

        status, headers, body = await self._send("GET", info.url, redirect=False, sink=sink)
        if status in REDIRECTS:  # a presigned link: no credentials to send
            status, headers, body = await self._send("GET", headers["Location"], auth=False,
                                                     sink=sink)
        if status >= 400:
            raise error_for(status, _json_or_text(body), headers)
        _, data = body
        return Result(thread.id, info.content_type, info.sha256, info.width, info.height,
                      thread.credits_charged, thread.raw, path, data)

    # -- billing ---------------------------------------------------------------------------

    async def balance(self, account: str | None = None) -> Balance:
        return Balance.of(await self._call("GET", self._billing("balance", account=account)))

    async def history(self, account: str | None = None) -> builtins.list[HistoryDay]:
        """The abbreviated history: one row per day for the latest 31 days."""
        days = (await self._call("GET", self._billing("history", account=account)))["days"]
        return [HistoryDay.of(d) for d in days]

    async def operations(self, day: date | str | None = None, account: str | None = None
                         ) -> builtins.list[Operation]:
        """The detailed history: every operation of today (or yesterday) and its cost."""
        when = day.isoformat() if isinstance(day, date) else day
        answer = await self._call("GET", self._billing("operations", date=when,
                                                       account=account))
        return [Operation.of(o) for o in answer["operations"]]

    async def create_subaccount(self, name: str) -> SubAccount:
        """Create the sub-account ``name`` (or find it: the call is idempotent)."""
        return SubAccount.of(await self._call("POST", f"{self.endpoint}/billing/subaccounts",
                                              json_body={"name": name}))

    async def subaccounts(self) -> builtins.list[SubAccount]:
        answer = await self._call("GET", f"{self.endpoint}/billing/subaccounts")
        return [SubAccount.of(a) for a in answer["subaccounts"]]

    async def create_subaccount_token(self, name: str) -> Token:
        """A new token for the sub-account ``name`` (its secret is shown only now)."""
        return Token.of(await self._call(
            "POST", f"{self.endpoint}/billing/subaccounts/{_id(name)}/tokens"))

    async def record_payment(self, name: str, payment_id: str, amount: str) -> Payment:
        """Record a payment the sub-account's owner made: ``amount`` (a decimal string)
        moves from the domain to it, once per ``payment_id``."""
        return Payment.of(await self._call(
            "POST", f"{self.endpoint}/billing/subaccounts/{_id(name)}/payments",
            json_body={"payment_id": payment_id, "amount": str(amount)}))

    def _billing(self, what: str, **query: str | None) -> str:
        return _url(f"{self.endpoint}/billing/{what}", query)

    # -- machinery -------------------------------------------------------------------------

    async def _call(self, method: str, url: str, *, json_body: Any = None,
                    body: Callable[[], Any] | None = None) -> dict[str, Any]:
        status, headers, raw = await self._send(method, url, json_body=json_body, body=body)
        value = _json_or_text(raw)
        if status >= 400:
            raise error_for(status, value, headers)
        if not isinstance(value, dict):
            raise ServerError(f"{method} {url}: the answer is not a JSON object",
                              code="unexpected_answer", status=status,
                              request_id=headers.get("x-request-id"))
        return value

    async def _send(self, method: str, url: str, *, json_body: Any = None,
                    body: Callable[[], Any] | None = None, auth: bool = True,
                    redirect: bool = True,
                    sink: Callable[[aiohttp.ClientResponse], Awaitable[Any]] | None = None,
                    ) -> tuple[int, Mapping[str, str], Any]:
        """One request, retried; a 2xx answer goes to ``sink`` (streamed) when given, any
        other is read whole (bounded)."""
        loop = asyncio.get_running_loop()
        for attempt in range(self.max_retries + 1):
            if (delay := self._not_before - loop.time()) > 0:
                log.debug("… rate limit: waiting %.2f s", delay)
                await asyncio.sleep(delay)
            try:
                log.debug("→ %s %s%s", method, url, f" {json.dumps(json_body)}"
                          if json_body is not None else " (multipart)" if body else "")
                async with self._http().request(
                        method, url, json=json_body, data=body() if body else None,
                        headers=self.auth if auth else None,
                        allow_redirects=redirect) as resp:
                    limit = RateLimit.from_headers(resp.headers)
                    wait = limit.wait_seconds()
                    # Every request of this client is held back by a 429's wait, or by
                    # RateLimit fields that say the window is spent; never by the Retry-After
                    # of a 202 (the service's hint for polling that one thread, which held
                    # every other thread's calls for a second) nor of a 503 (for the retry).
                    hold = wait if resp.status == 429 else None if resp.status == 503 else (
                        dataclasses.replace(limit, retry_after=None).wait_seconds())
                    if hold is not None:
                        self._not_before = loop.time() + min(hold, self.max_rate_limit_wait)
                    if sink is not None and 200 <= resp.status < 300:
                        value = await sink(resp)
                        log.debug("← %s (%s streamed)", resp.status, resp.content_type)
                        return resp.status, resp.headers, value
                    raw = await _read(resp, MAX_ERROR_BODY if resp.status >= 400 else None)
                    log.debug("← %s %s", resp.status, raw[:500].decode("utf-8", "replace"))
                    if resp.status in RETRY_STATUSES and attempt < self.max_retries:
                        if resp.status != 429 or wait is None:  # else: waited for above
                            await asyncio.sleep(self._pause(attempt, resp.status, limit))
                        continue
                    return resp.status, resp.headers, raw
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("× %s %s: %r", method, url, exc)
                if attempt == self.max_retries:
                    raise ConnectionFailed(f"{method} {url} failed after {attempt + 1} attempts:"
                                           f" {exc!r}", code="connection_failed") from None
                await asyncio.sleep(self._pause(attempt, 0, RateLimit()))
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, status: int, limit: RateLimit) -> float:
        wait = limit.wait_seconds()
        if wait is not None:  # the service said when: 429 waits that long, 5xx a bounded while
            cap = self.max_rate_limit_wait if status == 429 else self.max_backoff
            return float(min(wait, cap))
        return float(min(self.max_backoff, self.backoff * 2**attempt)) * (0.5 + random.random() / 2)


async def _read(resp: aiohttp.ClientResponse, limit: int | None) -> bytes:
    if limit is None:
        return await resp.read()
    chunks, size = [], 0
    while size < limit and (chunk := await resp.content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _id(value: ThreadRef) -> str:
    return quote(value.id if isinstance(value, Thread) else str(value), safe="")


def _url(base: str, query: Mapping[str, Any]) -> str:
    pairs = [(k, str(item)) for k, v in query.items() if v is not None
             for item in (v if isinstance(v, (list, tuple)) else [v])]
    return f"{base}?{urlencode(pairs)}" if pairs else base


def _json_or_text(raw: Any) -> Any:
    if not isinstance(raw, (bytes, bytearray)):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
