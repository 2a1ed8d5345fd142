"""What the HTTP endpoints do, without HTTP: validate, record, hand off.

The ingress stays light. It checks the request whole (credentials, path, envelope,
adjustments, image) before it writes anything, stores the image by its hash, inserts the
thread under a unique idempotency key, and hands the thread id to the conductor.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tilemore_operators.decode import decode_image

from tilemore.api.auth import Caller, authenticate
from tilemore.api.body import split_body
from tilemore.api.envelope import (
    BadRequest,
    Envelope,
    canonical_json,
    check_image_hash,
    idempotency_key,
    parse_envelope,
)
from tilemore.api.views import result_filename, thread_body
from tilemore.billing.money import fmt
from tilemore.billing.pricing import estimate
from tilemore.billing.service import Billing
from tilemore.blobs import BlobStore
from tilemore.catalog import Catalog
from tilemore.errors import Conflict, Forbidden, NotFound
from tilemore.pipeline.graph import TaskGraph, build_graph
from tilemore.settings import Settings
from tilemore.store import (
    ErrorIndex,
    NewThread,
    ThreadRecord,
    ThreadRepository,
    TokenRepository,
)

REPLAYED = "Idempotent-Replayed"


@dataclass(frozen=True)
class Submission:
    domain: str
    account: str
    meta_parts: list[str]
    image_sha256: str
    envelope: Envelope
    graph: TaskGraph
    key: str
    image: bytes | None


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ApiService:
    def __init__(self, threads: ThreadRepository, tokens: TokenRepository, blobs: BlobStore,
                 catalog: Catalog, settings: Settings, handoff: Callable[[str], None],
                 billing: Billing, errors: ErrorIndex | None = None) -> None:
        self.threads, self.tokens, self.blobs = threads, tokens, blobs
        self.catalog, self.settings, self.handoff = catalog, settings, handoff
        self.billing = billing
        self.errors = errors  # failed tasks' errors, for GET /errors

    def authenticate(self, header: str | None) -> Caller:
        return authenticate(self.tokens, header)

    def submit(self, caller: Caller, meta_parts: list[str], image_sha256: str,
               content_type: str, body: bytes, base_url: str) -> Answer:
        submission = self.check(caller, meta_parts, image_sha256, content_type, body)
        return self.answer_known(submission, base_url) or self.accept(submission, base_url)

    def check(self, caller: Caller, meta_parts: list[str], image_sha256: str,
              content_type: str, body: bytes) -> Submission:
        """Everything about a submission that needs no image work: cheap, so the HTTP layer
        runs it on its event loop."""
        check_image_hash(image_sha256)
        raw_envelope, image = split_body(content_type, body)
        envelope = parse_envelope(raw_envelope)
        pipeline = self.catalog.pipeline(envelope.pipeline or self.settings.default_pipeline)
        graph = self._graph(pipeline.name, canonical_json(envelope.adjustments),
                            envelope.output_format)
        account = self.billed_account(caller, envelope.account)
        key = idempotency_key(
            domain=caller.domain, account=account, meta_parts=meta_parts,
            image_sha256=image_sha256, adjustments=envelope.adjustments,
            output_format=envelope.output_format, pipeline=pipeline.name,
            fingerprint=pipeline.fingerprint)
        return Submission(caller.domain, account, meta_parts, image_sha256, envelope, graph, key,
                          image)

    def billed_account(self, caller: Caller, named: str | None) -> str:
        """The caller's own account, or — for a domain — one of its sub-accounts by name."""
        if named is None:
            return caller.account
        if caller.is_subaccount:
            if f"{caller.domain}/{named}" != caller.account:
                raise Forbidden("a sub-account cannot submit for another account",
                                code="wrong_account")
            return caller.account
        info = self.tokens.account(f"{caller.domain}/{named}")
        if info is None:
            raise NotFound(f"no sub-account '{named}'", code="unknown_account")
        return info.id

    def answer_known(self, sub: Submission, base_url: str) -> Answer | None:
        """The answer when no image work is needed: a replay, or ``needs-file``."""
        if sub.image is not None:
            return None  # the upload's hash must be checked first, off the event loop
        existing = self.threads.get_thread_by_key(sub.key)
        if existing is not None:
            return self._answer(existing, base_url, replayed=True)
        return Answer(200, {"status": "needs-file",
                            "message": "first sight of this request: send it again as "
                                       "multipart, the envelope part then the image"})

    def accept(self, sub: Submission, base_url: str) -> Answer:
        """A submission with its image: check the bytes, store them, record the thread."""
        image = sub.image
        if image is None:
            answer = self.answer_known(sub, base_url)
            assert answer is not None
            return answer
        if hashlib.sha256(image).hexdigest() != sub.image_sha256:
            raise BadRequest("the uploaded bytes do not hash to the SHA-256 in the URL",
                             code="hash_mismatch")
        existing = self.threads.get_thread_by_key(sub.key)
        if existing is not None:
            return self._answer(existing, base_url, replayed=True)
        # The whole image is decoded once here (at reduced scale for JPEG): corrupt, truncated
        # and oversized images are refused now, with a 4xx, not found later by a worker.
        decoded = decode_image(image, self.settings.max_input_pixels, size_hint=(1, 1))
        width, height = _full_size(image, decoded.width, decoded.height)
        # Set the estimated cost aside before anything is recorded: 402 when it is not there.
        cost = estimate(sub.graph, width, height, self.billing.prices())
        self.billing.reserve(sub.account, sub.key, cost)
        input_key = self.blobs.put(image)
        pipeline = sub.graph.pipeline
        record, created = self.threads.create_thread(NewThread(
            domain=sub.domain, account=sub.account, idem_key=sub.key, pipeline=pipeline.name,
            fingerprint=pipeline.fingerprint, meta_parts=sub.meta_parts,
            image_sha256=sub.image_sha256, input_key=input_key,
            output_format=sub.envelope.output_format,
            envelope=sub.envelope.model_dump(mode="json"),
            tasks=[(t.id, t.operator.name) for t in sub.graph.tasks],
        ))
        if created:
            self.handoff(record.id)
        return self._answer(record, base_url, replayed=not created)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one service per process, lives as long
    def _graph(self, pipeline: str, adjustments_json: str, output_format: str) -> TaskGraph:
        """Validated task graphs, by canonical adjustments: replays skip re-validation."""
        return build_graph(self.catalog.pipeline(pipeline), json.loads(adjustments_json),
                           output_format)

    def thread(self, caller: Caller, thread_id: str, base_url: str) -> Answer:
        return self._answer(self.own_thread(caller, thread_id), base_url)

    def cancel(self, caller: Caller, thread_id: str, base_url: str) -> Answer:
        record = self.own_thread(caller, thread_id)
        if record.status != "processing":
            raise Conflict(f"the thread is already {record.status}", code="already_finished")
        self.threads.request_cancel(thread_id)
        return self._answer(self.own_thread(caller, thread_id), base_url)

    def result(self, caller: Caller, thread_id: str, filename: str) -> tuple[str, Any]:
        """("redirect", url) where the blob store has direct links, else ("bytes", (data,
        content type))."""
        record = self.own_thread(caller, thread_id)
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

    def own_thread(self, caller: Caller, thread_id: str) -> ThreadRecord:
        """A domain sees its threads and its sub-accounts'; a sub-account only its own."""
        record = self.threads.get_thread(thread_id)
        if record is None:
            raise NotFound(f"no thread '{thread_id}'", code="unknown_thread")
        if record.domain != caller.domain:
            raise Forbidden("this thread belongs to another domain", code="wrong_domain")
        if caller.is_subaccount and record.account != caller.account:
            raise Forbidden("this thread belongs to another account", code="wrong_account")
        return record

    def _answer(self, record: ThreadRecord, base_url: str, replayed: bool = False) -> Answer:
        headers = {REPLAYED: "true"} if replayed else {}
        if record.status == "processing":
            headers["Retry-After"] = "1"
        body = thread_body(record, base_url)
        body["account"] = record.account
        body["credits_charged"] = fmt(self.billing.thread_cost(record.id))
        return Answer(202 if record.status == "processing" else 200, body, headers)


def _full_size(image: bytes, width: int, height: int) -> tuple[int, int]:
    """The image's real size, upright: the check above may have decoded a JPEG at reduced
    scale (``width``×``height``), and the header's size is before EXIF orientation."""
    from io import BytesIO

    from PIL import Image as PILImage

    with PILImage.open(BytesIO(image)) as im:
        w, h = im.size
    return (w, h) if (w >= h) == (width >= height) else (h, w)
