"""What the HTTP endpoints do, without HTTP: validate, record, hand off.

The ingress stays light. It checks the request whole (credentials, path, envelope,
adjustments, image) before it writes anything, stores the image by its hash, inserts the
thread under a unique idempotency key, and hands the thread id to the conductor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tilemore_operators.decode import decode_image

from tilemore.api.auth import Forbidden, authenticate
from tilemore.api.body import split_body
from tilemore.api.envelope import (
    BadRequest,
    check_image_hash,
    idempotency_key,
    parse_envelope,
)
from tilemore.api.views import result_filename, thread_body
from tilemore.blobs import BlobStore
from tilemore.catalog import Catalog
from tilemore.errors import TilemoreError
from tilemore.pipeline.graph import build_graph
from tilemore.settings import Settings
from tilemore.store import NewThread, ThreadRecord, ThreadRepository, TokenRepository

REPLAYED = "Idempotent-Replayed"


class NotFound(TilemoreError):
    status = 404


class Conflict(TilemoreError):
    status = 409


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ApiService:
    def __init__(self, threads: ThreadRepository, tokens: TokenRepository, blobs: BlobStore,
                 catalog: Catalog, settings: Settings, handoff: Callable[[str], None]) -> None:
        self.threads, self.tokens, self.blobs = threads, tokens, blobs
        self.catalog, self.settings, self.handoff = catalog, settings, handoff

    def authenticate(self, header: str | None) -> str:
        return authenticate(self.tokens, header)

    def submit(self, domain: str, meta_parts: list[str], image_sha256: str, content_type: str,
               body: bytes, base_url: str) -> Answer:
        check_image_hash(image_sha256)
        raw_envelope, image = split_body(content_type, body)
        envelope = parse_envelope(raw_envelope)
        pipeline = self.catalog.pipeline(envelope.pipeline or self.settings.default_pipeline)
        graph = build_graph(pipeline, envelope.adjustments, envelope.output_format)
        key = idempotency_key(
            domain=domain, account=domain, meta_parts=meta_parts, image_sha256=image_sha256,
            adjustments=envelope.adjustments, output_format=envelope.output_format,
            pipeline=pipeline.name, fingerprint=pipeline.fingerprint)
        if image is not None and hashlib.sha256(image).hexdigest() != image_sha256:
            raise BadRequest("the uploaded bytes do not hash to the SHA-256 in the URL",
                             code="hash_mismatch")
        existing = self.threads.get_thread_by_key(key)
        if existing is not None:
            return self._answer(existing, base_url, replayed=True)
        if image is None:
            return Answer(200, {"status": "needs-file",
                                "message": "first sight of this request: send it again as "
                                           "multipart, the envelope part then the image"})
        # The whole image is decoded once here (at reduced scale for JPEG): corrupt, truncated
        # and oversized images are refused now, with a 4xx, not found later by a worker.
        decode_image(image, self.settings.max_input_pixels, size_hint=(1, 1))
        input_key = self.blobs.put(image)
        record, created = self.threads.create_thread(NewThread(
            domain=domain, idem_key=key, pipeline=pipeline.name,
            fingerprint=pipeline.fingerprint, meta_parts=meta_parts,
            image_sha256=image_sha256, input_key=input_key,
            output_format=envelope.output_format, envelope=envelope.model_dump(mode="json"),
            tasks=[(t.id, t.operator.name) for t in graph.tasks],
        ))
        if created:
            self.handoff(record.id)
        return self._answer(record, base_url, replayed=not created)

    def thread(self, domain: str, thread_id: str, base_url: str) -> Answer:
        return self._answer(self._own(domain, thread_id), base_url)

    def cancel(self, domain: str, thread_id: str, base_url: str) -> Answer:
        record = self._own(domain, thread_id)
        if record.status != "processing":
            raise Conflict(f"the thread is already {record.status}", code="already_finished")
        self.threads.request_cancel(thread_id)
        return self._answer(self._own(domain, thread_id), base_url)

    def result(self, domain: str, thread_id: str, filename: str) -> tuple[str, Any]:
        """("redirect", url) where the blob store has direct links, else ("bytes", (data,
        content type))."""
        record = self._own(domain, thread_id)
        if record.result is None:
            raise NotFound(f"the thread is {record.status}; it has no result",
                           code="no_result")
        if filename != result_filename(record):
            raise NotFound(f"the result is named {result_filename(record)}", code="not_found")
        r = record.result
        link = self.blobs.link(r.key, filename, r.content_type)
        if link is not None:
            return "redirect", link
        return "bytes", (self.blobs.get(r.key), r.content_type)

    def _own(self, domain: str, thread_id: str) -> ThreadRecord:
        record = self.threads.get_thread(thread_id)
        if record is None:
            raise NotFound(f"no thread '{thread_id}'", code="unknown_thread")
        if record.domain != domain:
            raise Forbidden("this thread belongs to another domain", code="wrong_domain")
        return record

    def _answer(self, record: ThreadRecord, base_url: str, replayed: bool = False) -> Answer:
        headers = {REPLAYED: "true"} if replayed else {}
        if record.status == "processing":
            headers["Retry-After"] = "1"
        return Answer(202 if record.status == "processing" else 200,
                      thread_body(record, base_url), headers)
