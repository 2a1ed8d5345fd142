"""The HTTP surface (FastAPI): routes, error bodies, OpenAPI. Logic lives in ApiService.

The same app runs under Ray Serve (``deployments/ingress.py``) and, in tests, under uvicorn.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tilemore import __version__
from tilemore.api.billing import add_billing_routes
from tilemore.api.body import read_limited
from tilemore.api.envelope import check_meta_parts
from tilemore.api.errors import add_error_routes
from tilemore.api.service import Answer, ApiService
from tilemore.errors import ServiceUnavailable, TilemoreError

DESCRIPTION = """Submit an image with its adjustments; get the result by link.

Requests are idempotent on their parameters: the same image with the same adjustments and
output format is one task thread, run and billed once, however often it is sent. Ask first
with the JSON envelope alone; on `needs-file`, send it again as multipart (envelope part, then
image part). Authenticate with `Authorization: Token <token> Domain <domain>`.
"""


_process_service: ApiService | None = None


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
    app = FastAPI(title="Tilemore", version=__version__, description=DESCRIPTION)
    app.state.api = api

    @app.exception_handler(TilemoreError)
    async def tilemore_error(request: Request, exc: TilemoreError) -> JSONResponse:
        # A 503 (database or blob store unreachable, service starting) is worth retrying:
        # say when, so clients back off instead of hammering a recovering service.
        headers = ({"Retry-After": str(getattr(exc, "retry_after", 1))}
                   if exc.status == 503 else None)
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return JSONResponse({"error": {"code": "invalid_request",
                                       "message": f"{where}: {err.get('msg')}"}},
                            status_code=400)

    def service(request: Request) -> ApiService:
        api = request.app.state.api or process_service()
        if api is None:
            raise ServiceUnavailable("the service is starting", code="not_ready")
        return api

    def base_url(request: Request) -> str:
        return service(request).settings.public_url or str(request.base_url)

    def respond(answer: Answer) -> JSONResponse:
        return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)

    add_billing_routes(app, service)
    add_error_routes(app, service)

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    async def submit(request: Request, image_sha256: str) -> JSONResponse:
        api = service(request)
        caller = api.authenticate(request.headers.get("authorization"))
        raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        head = raw.rsplit("/submitted/", 1)[0]
        meta_parts = check_meta_parts(head) if head.strip("/") else []
        body = await read_limited(request.stream(), api.settings.max_input_bytes)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/"):
            # An upload: parsing, hashing, decoding and storing go to a worker thread, so the
            # event loop keeps answering everyone else.
            return respond(await run_in_threadpool(api.submit, caller, meta_parts, image_sha256,
                                                   content_type, body, base_url(request)))
        # An envelope alone (a replay, or the first ask): a small parse and one indexed read,
        # answered right here — a thread-pool hop costs more than the work under Serve.
        submission = api.check(caller, meta_parts, image_sha256, content_type, body)
        return respond(api.answer_known(submission, base_url(request))
                       or await run_in_threadpool(api.accept, submission, base_url(request)))

    @app.post("/submitted/{image_sha256}/", tags=["threads"], status_code=202)
    async def submit_plain(request: Request, image_sha256: str) -> JSONResponse:
        """Submit without meta parts."""
        return await submit(request, image_sha256)

    @app.post("/{meta_parts:path}/submitted/{image_sha256}/", tags=["threads"],
              status_code=202)
    async def submit_with_meta(request: Request, meta_parts: str,
                               image_sha256: str) -> JSONResponse:
        """Submit an image (multipart: envelope part, image part) or ask about it (JSON
        envelope alone). Answers `needs-file`, or the thread: `processing`, `done` with a
        result link, `failed` with an error, or `canceled`."""
        return await submit(request, image_sha256)

    @app.get("/threads/{thread_id}", tags=["threads"])
    async def get_thread(request: Request, thread_id: str) -> JSONResponse:
        api = service(request)
        caller = api.authenticate(request.headers.get("authorization"))
        return respond(api.thread(caller, thread_id, base_url(request)))  # one indexed read

    @app.post("/threads/{thread_id}/cancel", tags=["threads"])
    async def cancel_thread(request: Request, thread_id: str) -> JSONResponse:
        api = service(request)
        caller = api.authenticate(request.headers.get("authorization"))
        return respond(await run_in_threadpool(api.cancel, caller, thread_id, base_url(request)))

    @app.get("/results/{thread_id}/{filename}", tags=["threads"])
    async def get_result(request: Request, thread_id: str, filename: str) -> Response:
        api = service(request)
        caller = api.authenticate(request.headers.get("authorization"))
        kind, value = await run_in_threadpool(api.result, caller, thread_id, filename)
        if kind == "redirect":
            return RedirectResponse(value, status_code=307)
        data, content_type = value
        return Response(data, media_type=content_type,
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})

    return app
