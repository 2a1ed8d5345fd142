"""The HTTP surface (FastAPI): routes, error bodies, OpenAPI. Logic lives in ApiService.

The same app runs under Ray Serve (``tilemore_deployments/ingress.py``) and, in tests, under
uvicorn.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from tilemore import __version__
from tilemore.api.auth import Caller, authenticated, client_of
from tilemore.api.billing import add_billing_routes
from tilemore.api.body import ReadLimits, media_type, read_json_body, read_multipart
from tilemore.api.envelope import check_meta_parts
from tilemore.api.error_search import add_error_routes
from tilemore.api.lifecycle import add_lifecycle_routes
from tilemore.api.listing import add_listing_routes
from tilemore.api.openapi import DescribedAPI
from tilemore.api.ratelimit import RateLimitHeaders
from tilemore.api.service import Answer, ApiService
from tilemore.api.waiting import Waiter, prefer_wait, wait_query
from tilemore.api.webhooks import add_webhook_routes
from tilemore.errors import NotFound, ServiceUnavailable, TilemoreError
from tilemore.settings import Settings

log = logging.getLogger("tilemore.api")

DESCRIPTION = """Submit an image with its adjustments; get the result by link.

Requests are idempotent on their parameters: the same image with the same adjustments and
output format is one task thread, run and billed once, however often it is sent. Ask first
with the JSON envelope alone; on `needs-file`, send it again as multipart (envelope part, then
image part). Authenticate with `Authorization: Bearer <token>` (or the guide's
`Authorization: Token <token> Domain <domain>`).
"""


_process_service: ApiService | None = None
YEAR = 31_536_000  # a result's longest cache lifetime, where nothing expires it sooner


def use_service(api: ApiService) -> None:
    """Serve this process's apps from ``api``. Ray Serve runs a pickled copy of the app in
    each replica, so a replica sets its service here rather than on the app it was given."""
    global _process_service
    _process_service = api


def process_service() -> ApiService | None:
    # Module-level, so that the app's pickled routes look it up here, in the replica's own
    # module, instead of carrying a copy of the global from when the app was pickled.
    return _process_service


def create_app(api: ApiService | None = None) -> FastAPI:
    # DescribedAPI: the OpenAPI document completed with models, security, bodies and errors.
    app = DescribedAPI(title="Tilemore", version=__version__, description=DESCRIPTION)
    app.state.api = api
    app.state.waiter = None  # long polls' (tilemore.api.waiting), made in the replica
    app.add_middleware(RateLimitHeaders)  # an admitted request's RateLimit fields

    @app.exception_handler(TilemoreError)
    async def tilemore_error(request: Request, exc: TilemoreError) -> JSONResponse:
        # 429 and 503 are worth retrying: say when, so clients back off instead of hammering.
        retry_after = getattr(exc, "retry_after", None)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status in (429, 503) and retry_after:
            headers["Retry-After"] = str(retry_after)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="tilemore"'
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return JSONResponse({"error": {"code": "invalid_request",
                                       "message": f"{where}: {err.get('msg')}"}},
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def routing_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's own answers (no such route, a method the path lacks) in the service's
        error body. Its 405 names only the first route that matched the path: ``Allow``
        here lists the methods of every route for it."""
        if exc.status_code == 405:
            allowed = sorted({m for route in request.app.router.routes
                              if route.matches(request.scope)[0] != Match.NONE
                              for m in getattr(route, "methods", None) or ()})
            err = TilemoreError(f"{request.method[:20]} is not allowed here; allowed: "
                                f"{', '.join(allowed)}", code="method_not_allowed")
            err.status, err.headers = 405, {"Allow": ", ".join(allowed)}
        elif exc.status_code == 404:
            err = NotFound(f"no such route: {request.method[:20]} {request.url.path[:200]}",
                           code="not_found")
        else:
            err = TilemoreError(str(exc.detail), code="http_error")
            err.status, err.headers = exc.status_code, exc.headers
        return await tilemore_error(request, err)

    def service(request: Request) -> ApiService:
        api = request.app.state.api or process_service()
        if api is None:
            raise ServiceUnavailable("the service is starting", code="not_ready")
        return api

    def respond(answer: Answer) -> JSONResponse:
        return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)

    add_billing_routes(app, service)
    add_error_routes(app, service)
    add_lifecycle_routes(app, service)
    add_listing_routes(app, service)
    add_webhook_routes(app, service)

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    async def submit(request: Request, image_sha256: str) -> Response:
        api = service(request)
        caller = await authenticated(api, request, "submit")
        raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        head = raw.rsplit("/submitted/", 1)[0]
        meta_parts = check_meta_parts(head) if head.strip("/") else []
        limits = read_limits(api.settings)
        try:
            if media_type(request.headers.get("content-type", "")) != "multipart/form-data":
                envelope = await read_json_body(request.stream(), limits)
                answer = await run_in_threadpool(api.ask, caller, meta_parts, image_sha256,
                                                 envelope)
                return await waited(request, api, caller, answer)
            upload = await read_multipart(request.stream(), request.headers["content-type"],
                                          limits)
        except ClientDisconnect:
            log.info("client %s left before its request body was whole", client_of(request))
            return Response(status_code=400)  # nobody reads it
        try:
            # Parsing, hashing checks, decoding and storing: the thread pool's, so the event
            # loop keeps answering everyone else.
            answer = await run_in_threadpool(api.upload, caller, meta_parts, image_sha256,
                                             upload)
        finally:
            upload.close()
        return await waited(request, api, caller, answer)

    async def waited(request: Request, api: ApiService, caller: Caller,
                     answer: Answer) -> Response:
        """A submission's answer, after the wait its ``Prefer: wait=N`` asks for."""
        seconds = prefer_wait(request.headers.get("prefer"))
        if seconds:
            answer = await answer_when_ended(request, api, caller, answer, seconds)
            answer.headers["Preference-Applied"] = f"wait={seconds}"
        return respond(answer)

    @app.post("/submitted/{image_sha256}/", tags=["threads"], status_code=202)
    async def submit_plain(request: Request, image_sha256: str) -> Response:
        """Submit without meta parts."""
        return await submit(request, image_sha256)

    @app.post("/{meta_parts:path}/submitted/{image_sha256}/", tags=["threads"],
              status_code=202)
    async def submit_with_meta(request: Request, meta_parts: str,
                               image_sha256: str) -> Response:
        """Submit an image (multipart: envelope part, image part) or ask about it (JSON
        envelope alone). Answers `needs-file`, or the thread: `processing`, `done` with a
        result link, `failed` with an error, or `canceled`."""
        return await submit(request, image_sha256)

    def waiter(request: Request, api: ApiService) -> Waiter:
        # Made on first use, in the replica: Serve pickles the app before it serves.
        if request.app.state.waiter is None:
            request.app.state.waiter = Waiter(api.threads.statuses)
        return request.app.state.waiter

    async def answer_when_ended(request: Request, api: ApiService, caller: Caller,
                                answer: Answer, seconds: float) -> Answer:
        """``answer`` itself, or, when the thread was processing and the client asked to
        wait, the thread once it ended or the wait ran out (:mod:`tilemore.api.waiting`)."""
        if seconds <= 0 or answer.body.get("status") != "processing":
            return answer
        thread_id = answer.body["thread_id"]
        if not await waiter(request, api).until_ended(thread_id, seconds):
            return answer
        return await run_in_threadpool(api.thread, caller, thread_id)

    @app.get("/threads/{thread_id}", tags=["threads"])
    async def get_thread(request: Request, thread_id: str,
                         wait: str | None = Query(None)) -> JSONResponse:  # noqa: B008
        """The thread. With `wait=S` (0-60 s), answered when it ends or after S seconds:
        one request instead of polling."""
        api = service(request)
        caller = await authenticated(api, request, "read")
        seconds = wait_query(wait)
        answer = await run_in_threadpool(api.thread, caller, thread_id)
        return respond(await answer_when_ended(request, api, caller, answer, seconds))

    @app.post("/threads/{thread_id}/cancel", tags=["threads"])
    async def cancel_thread(request: Request, thread_id: str) -> JSONResponse:
        api = service(request)
        caller = await authenticated(api, request, "submit")
        return respond(await run_in_threadpool(api.cancel, caller, thread_id))

    @app.get("/results/{thread_id}/{filename}", tags=["threads"])
    async def get_result(request: Request, thread_id: str, filename: str) -> Response:
        api = service(request)
        caller = await authenticated(api, request, "read")
        kind, value = await run_in_threadpool(api.result, caller, thread_id, filename)
        if kind == "redirect":
            return RedirectResponse(value, status_code=307)
        data, content_type, seconds = value  # seconds: what is left of its retention
        max_age = YEAR if seconds is None else min(seconds, YEAR)
        return Response(data, media_type=content_type,
                        headers={"Cache-Control": f"private, max-age={max_age}, immutable"})

    return app


def read_limits(settings: Settings) -> ReadLimits:
    return ReadLimits(max_bytes=settings.max_input_bytes,
                      max_envelope_bytes=settings.max_envelope_bytes,
                      idle_seconds=settings.upload_idle_seconds,
                      min_rate=settings.upload_min_bytes_per_second,
                      grace_seconds=settings.upload_grace_seconds)
