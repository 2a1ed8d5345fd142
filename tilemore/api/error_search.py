"""``GET /errors``: full-text search over failed tasks' errors (exception type, message,
traceback), best match first.

A domain searches its own errors and its sub-accounts'; a sub-account only its own. Bad
input is a 400 with a code: ``empty_query``, ``invalid_query`` (syntax the database rejects),
``invalid_limit``; a ``thread_id`` of another domain or account is 403, an unknown one 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tilemore.api.auth import Caller, authenticated
from tilemore.api.views import search_body
from tilemore.errors import InvalidSearch, NotFound
from tilemore.store.error_index import MAX_LIMIT


def parse_limit(text: str | None, default: int = 20) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidSearch(f"limit must be a whole number from 1 to {MAX_LIMIT}, got "
                            f"'{text[:20]}'", code="invalid_limit") from None


def search(api: Any, caller: Caller, q: str | None, limit: int, thread_id: str | None,
           operator: str | None) -> dict[str, Any]:
    if api.errors is None:
        raise NotFound("this service keeps no error index", code="not_configured")
    if thread_id is not None:
        api.own_thread(caller, thread_id)  # 404 unknown, 403 another domain's or account's
    hits = api.errors.search_errors(
        q or "", domain=caller.domain,
        account=caller.account if caller.is_subaccount else None,
        thread_id=thread_id, operator=operator, limit=limit)
    return search_body(q, hits)


def add_error_routes(app: FastAPI, service: Callable[[Request], Any]) -> None:
    @app.get("/errors", tags=["errors"])
    async def search_errors(request: Request, q: str | None = None, limit: str | None = None,
                            thread_id: str | None = None,
                            operator: str | None = None) -> JSONResponse:
        """Search failed tasks' errors: `q` is the query (words, "phrases", OR; the SQLite
        index takes FTS5 syntax, PostgreSQL web-search syntax), `limit` 1–100 (20),
        optionally within one `thread_id` or `operator`. Each result has its time, thread,
        task, operator, attempt, whether it ended the thread (`final`), the exception's
        type, message and traceback, and a snippet with the matches between « and »."""
        api = service(request)
        caller = await authenticated(api, request)
        size = parse_limit(limit)
        return JSONResponse(await run_in_threadpool(search, api, caller, q, size, thread_id,
                                                    operator))
