"""``GET /threads``: the caller's threads, newest first, a page at a time.

Filters: ``status``, ``meta_part`` (repeatable: every one must be among the thread's meta
parts), ``account`` (a sub-account's name; a domain sees its own threads and all its
sub-accounts', a sub-account only its own) and ``created_since`` (ISO 8601, or unix
seconds). ``limit`` is 1–100 (20). The answer's ``next_cursor`` (null on the last page) is
opaque: send it back as ``cursor`` for the next page. Every parameter is bounded and checked
before the database is read; a bad one is 400 with a code.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tilemore.api.auth import Caller, authenticated
from tilemore.api.envelope import META_PART
from tilemore.errors import Forbidden, NotFound, TilemoreError
from tilemore.store import ThreadStatus
from tilemore.store.listing import ThreadFilter

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_META_FILTERS = 8
MAX_PARAM = 200  # characters of any one parameter
STATUSES: tuple[ThreadStatus, ...] = ("processing", "done", "failed", "canceled")
_THREAD_ID = re.compile(r"^[0-9a-f]{1,64}$")


class BadListing(TilemoreError):
    status = 400


# created_since: unix seconds, or an ISO 8601 date or UTC time (``Z``, an offset, or none),
# each month with its own days (29 February passes the pattern; a common year's is a 400).
SECONDS = r"[0-9]{1,12}(\.[0-9]{1,9})?"
_DAY = (r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-((0[13578]|1[02])-"
        r"(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-9]))")
_TIME = (r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
         r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?")
SINCE_PATTERN = f"^({SECONDS}|{_DAY}({_TIME})?)$"
SINCE = re.compile(SINCE_PATTERN)


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
            1 <= int(text) <= MAX_LIMIT):
        raise BadListing(f"limit must be a whole number from 1 to {MAX_LIMIT}, got "
                         f"'{text[:20]}'", code="invalid_limit")
    return int(text)


def encode_cursor(created_at: float, thread_id: str) -> str:
    raw = json.dumps([created_at, thread_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(text: str | None) -> tuple[float, str] | None:
    if text is None:
        return None
    try:
        if len(text) > MAX_PARAM:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, thread_id = json.loads(raw)
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise ValueError("not a position")
        if not isinstance(thread_id, str) or not _THREAD_ID.match(thread_id):
            raise ValueError("not a thread id")
        return float(at), thread_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise BadListing("cursor is not one this service gave (send next_cursor back as "
                         "it came)", code="invalid_cursor") from None


def parse_since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        if len(text) > 40 or not SINCE.fullmatch(text):  # exactly what the document says
            raise ValueError("not a time")
        if re.fullmatch(SECONDS, text):
            return float(text)
        when = datetime.fromisoformat(text)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise BadListing(f"created_since must be an ISO 8601 time (2026-01-31T12:00:00Z) or "
                         f"unix seconds, got '{text[:40]}'", code="invalid_filter") from None


def parse_filter(caller: Caller, status: str | None, meta_parts: list[str] | None,
                 since: str | None, cursor: str | None) -> ThreadFilter:
    if status is not None and status not in STATUSES:
        raise BadListing(f"status must be one of {', '.join(STATUSES)}, got "
                         f"'{status[:40]}'", code="invalid_filter")
    parts = meta_parts or []
    if len(parts) > MAX_META_FILTERS or not all(META_PART.match(p) for p in parts):
        raise BadListing(f"meta_part: at most {MAX_META_FILTERS}, each letters, digits and "
                         ". _ ~ - (at most 128)", code="invalid_filter")
    return ThreadFilter(domain=caller.domain, status=status, meta_parts=tuple(parts),
                        since=parse_since(since), after=parse_cursor(cursor))


def list_threads(api: Any, caller: Caller, where: ThreadFilter, account: str | None,
                 limit: int) -> dict[str, Any]:
    """Blocking (the database): call it off the event loop."""
    if caller.is_subaccount:
        if account is not None and f"{caller.domain}/{account}" != caller.account:
            raise Forbidden("a sub-account sees only its own threads", code="wrong_account")
        scope = caller.account
    elif account is not None:
        info = api.tokens.account(f"{caller.domain}/{account[:MAX_PARAM]}")
        if info is None:
            raise NotFound(f"no sub-account '{account[:40]}'", code="unknown_account")
        scope = info.id
    else:
        scope = None
    where = ThreadFilter(where.domain, scope, where.status, where.meta_parts, where.since,
                         where.after)
    # One more than asked: whether another page follows, without a count.
    records = api.threads.list_threads(where, limit + 1)
    page = records[:limit]
    more = len(records) > limit
    return {"threads": [api.thread_answer(r) for r in page],
            "next_cursor": encode_cursor(page[-1].created_at, page[-1].id) if more else None}


def add_listing_routes(app: FastAPI, service: Callable[[Request], Any]) -> None:
    @app.get("/threads", tags=["threads"])
    async def threads(request: Request, status: str | None = None,
                      meta_part: list[str] | None = Query(None),  # noqa: B008 - FastAPI's way
                      account: str | None = None, created_since: str | None = None,
                      limit: str | None = None, cursor: str | None = None) -> JSONResponse:
        """The caller's threads, newest first: `{"threads": [thread answers, as GET
        /threads/{id} gives them], "next_cursor": "…" or null}`. Filters: `status`,
        `meta_part` (repeatable), `account` (a sub-account's name), `created_since` (ISO
        8601 or unix seconds); `limit` 1–100 (20); `cursor`: the previous page's
        `next_cursor`."""
        api = service(request)
        caller = await authenticated(api, request, "read")
        size = parse_limit(limit)
        where = parse_filter(caller, status, meta_part, created_since, cursor)
        return JSONResponse(await run_in_threadpool(list_threads, api, caller, where,
                                                    account, size))
