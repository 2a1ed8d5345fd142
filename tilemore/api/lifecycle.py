"""Running a thread again: ``POST /threads/{id}/retry`` (docs/lifecycle.md).

- A failed or canceled thread runs again, as the same thread, while its retry window is open:
  its unfinished tasks run, the finished ones are skipped from their checkpoints and are not
  charged again.
- A done thread is never run again by accident: 409 ``thread_done`` while its result is kept.
  Once its result expired (the record lives), a retry runs the same request as a new thread,
  charged again; the old record keeps its id.
- Where the input image expired, the answer is 410 ``input_expired`` naming the image to send:
  the same call with the image's bytes as its body (``application/octet-stream``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tilemore.api.auth import Caller, authenticated
from tilemore.api.body import BodyTooLarge, timed_chunks
from tilemore.api.envelope import BadRequest, canonical_json
from tilemore.api.service import Answer, ApiService
from tilemore.billing.pricing import estimate
from tilemore.blobs import BlobNotFound, blob_key
from tilemore.decoding import read_header
from tilemore.errors import Conflict, NotFound
from tilemore.lifecycle import InputExpired, RetryWindowClosed, ThreadDone
from tilemore.store import NewThread, ThreadRecord
from tilemore.store.lifecycle import ThreadExpiry


class LifecycleApi:
    def __init__(self, api: ApiService) -> None:
        if api.lifecycle is None:
            raise NotFound("this service keeps every thread as it is: nothing to run again",
                           code="not_found")
        self.api, self.lifecycle = api, api.lifecycle

    def retry(self, caller: Caller, thread_id: str, image: bytes | None) -> Answer:
        api, lc = self.api, self.lifecycle
        rec = api.own_thread(caller, thread_id)
        if rec.status == "processing":
            raise Conflict(f"thread {rec.id} is still running", code="thread_running")
        dates = lc.dates(rec.id)
        if dates is None:  # ended before its dates were kept, or its end not dated yet
            dates = lc.store.thread_ended(rec.id, rec.domain, rec.status,
                                          lc.retention.ttl(rec.domain))
        if rec.status == "done":
            if not dates.result_expired:
                raise ThreadDone(f"thread {rec.id} is done and its result is kept: a done "
                                 "thread is not run again (GET its result instead)")
            return self._rerun(rec, image)
        if dates.retry_closed:
            raise RetryWindowClosed(
                f"thread {rec.id} ended too long ago to run again (its retry window closed; "
                "its checkpoints are gone): send the request again with the image, with a "
                "changed meta part, or once its record expires", thread_id=rec.id)
        self._input(rec, dates, image, how="this same call")
        api.billing.reserve(rec.account, rec.idem_key, self._estimate(rec))
        if not lc.store.reopen(rec.id, rec.input_key):  # changed meanwhile
            api.billing.release(rec.idem_key)
            raise Conflict(f"thread {rec.id} changed meanwhile; ask it again",
                           code="thread_running")
        api.handoff(rec.id)
        fresh = api.threads.get_thread(rec.id)
        assert fresh is not None
        return api._answer(fresh)

    def _input(self, rec: ThreadRecord, dates: ThreadExpiry, image: bytes | None,
               how: str) -> None:
        """The thread's input, still stored, or stored again from ``image``; else 410."""
        held = not dates.input_expired and self.api.blobs.exists(rec.input_key)
        if held and image is None:
            self.lifecycle.refer(rec.id, rec.domain, "input", rec.input_key)
            return
        if image is None:
            raise InputExpired(
                f"the input image of thread {rec.id} is no longer stored: send {how} again "
                f"with the image (SHA-256 {rec.image_sha256}) as the body, Content-Type "
                "application/octet-stream", thread_id=rec.id, image_sha256=rec.image_sha256)
        if blob_key(image) != rec.image_sha256:
            raise BadRequest("the body's bytes do not hash to the thread's image SHA-256 "
                             f"{rec.image_sha256}", code="hash_mismatch")
        self.lifecycle.pin(rec.input_key, "input", len(image))
        self.api.blobs.put_file(io.BytesIO(image), rec.input_key)
        self.lifecycle.refer(rec.id, rec.domain, "input", rec.input_key, len(image))

    def _estimate(self, rec: ThreadRecord) -> Any:
        api = self.api
        try:
            data = api.blobs.get(rec.input_key)
        except BlobNotFound:
            raise InputExpired(f"the input image of thread {rec.id} is no longer stored",
                               thread_id=rec.id, image_sha256=rec.image_sha256) from None
        header = read_header(io.BytesIO(data), api.settings.max_input_pixels)
        graph = api._graph(rec.pipeline, canonical_json(rec.envelope.get("adjustments", {})),
                           rec.output_format)
        return estimate(graph, header.width, header.height, api._prices())

    def _rerun(self, rec: ThreadRecord, image: bytes | None) -> Answer:
        """A done thread whose result expired: its request runs again as a new thread."""
        api, lc = self.api, self.lifecycle
        lc.store.supersede(rec.id, rec.idem_key)  # the key now leads to the next thread
        dates = lc.dates(rec.id)
        assert dates is not None
        self._input(rec, dates, image, how="the request (POST …/submitted/{sha}/) or this call")
        api.billing.reserve(rec.account, rec.idem_key, self._estimate(rec))
        try:
            new, created = api.threads.create_thread(NewThread(
                domain=rec.domain, account=rec.account, idem_key=rec.idem_key,
                pipeline=rec.pipeline, fingerprint=rec.fingerprint, meta_parts=rec.meta_parts,
                image_sha256=rec.image_sha256, input_key=rec.input_key,
                output_format=rec.output_format, envelope=rec.envelope,
                tasks=[(t.task_id, t.operator) for t in rec.tasks]),
                also=lc.referring(rec.domain, "input", rec.input_key))
        except BaseException:
            api.billing.release(rec.idem_key)
            raise
        if created:
            api.handoff(new.id)
        return api._answer(new, replayed=not created)


async def _image_body(request: Request, api: ApiService) -> bytes | None:
    """The optional body of a retry: the image again, bounded like an upload."""
    declared = request.headers.get("content-length")
    limit = api.settings.max_input_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is over the limit of {limit:,} bytes")
    from tilemore.api.app import read_limits

    chunks, size = [], 0
    async for chunk in timed_chunks(request.stream(), read_limits(api.settings)):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks) or None


def add_lifecycle_routes(app: FastAPI, service: Callable[[Request], Any]) -> None:
    @app.post("/threads/{thread_id}/retry", tags=["threads"])
    async def retry_thread(request: Request, thread_id: str) -> JSONResponse:
        """Run a failed or canceled thread again (only its unfinished tasks, charged once),
        or — once a done thread's result expired — its request as a new thread. Body: empty,
        or the image again (application/octet-stream) when its input expired."""
        api = service(request)
        caller = await authenticated(api, request, "submit")
        image = await _image_body(request, api)
        answer = await run_in_threadpool(LifecycleApi(api).retry, caller, thread_id, image)
        return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)
