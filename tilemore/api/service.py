"""What the HTTP endpoints do, without HTTP: validate, reserve, record, hand off.

The ingress stays light. It checks the request whole (credentials, path, envelope,
adjustments, image) before it writes anything, stores the image by its hash, inserts the
thread under a unique idempotency key, and hands the thread id to the conductor. Work is
bounded before it is done: sizes from the image's header, credits reserved before a pixel is
decoded, decoding within a pixel budget shared by the replica's requests.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tilemore.api.auth import Authenticator, Caller
from tilemore.api.body import Upload
from tilemore.api.budget import PixelBudget
from tilemore.api.envelope import (
    BadRequest,
    Envelope,
    canonical_json,
    check_image_hash,
    idempotency_key,
    parse_envelope,
)
from tilemore.api.ratelimit import RateLimiter
from tilemore.api.views import result_filename, thread_body
from tilemore.billing.money import ZERO, fmt
from tilemore.billing.pricing import estimate
from tilemore.billing.service import Billing
from tilemore.blobs import BlobStore
from tilemore.catalog import Catalog
from tilemore.decoding import Header, decode_image, read_header
from tilemore.errors import Conflict, Forbidden, ImageTooLarge, NotFound, ServiceUnavailable
from tilemore.lifecycle import Lifecycle, ResultExpired
from tilemore.pipeline.graph import TaskGraph, build_graph
from tilemore.settings import Settings
from tilemore.store import (
    ErrorIndex,
    NewThread,
    ThreadRecord,
    ThreadRepository,
    TokenRepository,
)
from tilemore.store.limits import ThreadQuota, check_quota

log = logging.getLogger("tilemore.api")

REPLAYED = "Idempotent-Replayed"
BACKLOG_SECONDS = 1.0  # how stale the admission check's count of unfinished threads may be
PRICES_SECONDS = 5.0  # an admin's new price reaches estimates within this
GRAPH_CACHE_KEY = 4096  # adjustments longer than this (as JSON) are validated every time


@dataclass(frozen=True)
class Submission:
    domain: str
    account: str
    meta_parts: list[str]
    image_sha256: str
    envelope: Envelope
    graph: TaskGraph
    key: str


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ApiService:
    def __init__(self, threads: ThreadRepository, tokens: TokenRepository, blobs: BlobStore,
                 catalog: Catalog, settings: Settings, handoff: Callable[[str], None],
                 billing: Billing, errors: ErrorIndex | None = None,
                 lifecycle: Lifecycle | None = None) -> None:
        """``lifecycle``: inputs referenced from their threads, and answers that respect
        retention (410 once a result expired); None keeps everything for ever."""
        self.threads, self.tokens, self.blobs = threads, tokens, blobs
        self.lifecycle = lifecycle
        self.catalog, self.settings, self.handoff = catalog, settings, handoff
        self.billing = billing
        self.errors = errors  # failed tasks' errors, for GET /errors
        self._authenticate = Authenticator(
            tokens, settings.token_cache_seconds, settings.auth_failure_burst,
            settings.auth_failure_per_second)
        # Requests a second and running threads per domain and sub-account (None: off).
        self.limiter = (RateLimiter.from_settings(tokens, settings.rate_limits)
                        if settings.rate_limiting else None)
        self.decoding = PixelBudget(settings.decode_budget, settings.decode_wait_seconds)
        self._prices = Cached(billing.prices, PRICES_SECONDS)
        self._backlog = Cached(lambda: sum(threads.backlog().values()), BACKLOG_SECONDS)
        catalog.record_versions(threads)  # threads accepted now can finish after a deploy

    # Every method below may block (database, billing, blobs, image work): the HTTP layer
    # calls them on its thread pool, never on the event loop.

    def authenticate(self, header: str | None, client: str = "") -> Caller:
        caller = self._authenticate(header, client)
        if self.limiter is not None:
            self.limiter.maybe_sync()  # shares this replica's demand, when it is due
        return caller

    def ask(self, caller: Caller, meta_parts: list[str], image_sha256: str,
            envelope: bytes) -> Answer:
        """The envelope alone: a replay's answer, or ``needs-file``."""
        sub = self.check(caller, meta_parts, image_sha256, envelope)
        existing = self.threads.get_thread_by_key(sub.key)
        if existing is not None:
            return self._answer(existing, replayed=True)
        return Answer(200, {"status": "needs-file",
                            "message": "first sight of this request: send it again as "
                                       "multipart, the envelope part then the image"})

    def check(self, caller: Caller, meta_parts: list[str], image_sha256: str,
              envelope: bytes) -> Submission:
        """Everything about a submission that needs no image."""
        check_image_hash(image_sha256)
        env = parse_envelope(envelope, self.settings.max_meta_bytes)
        pipeline = self.catalog.pipeline(env.pipeline or self.settings.default_pipeline)
        graph = self._graph(pipeline.name, canonical_json(env.adjustments), env.output_format)
        account = self.billed_account(caller, env.account)
        key = idempotency_key(
            domain=caller.domain, account=account, meta_parts=meta_parts,
            image_sha256=image_sha256, adjustments=env.adjustments,
            output_format=env.output_format, pipeline=pipeline.name,
            fingerprint=pipeline.fingerprint)
        return Submission(caller.domain, account, meta_parts, image_sha256, env, graph, key)

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

    def upload(self, caller: Caller, meta_parts: list[str], image_sha256: str,
               upload: Upload) -> Answer:
        """A submission with its image. The work is ordered by what it costs: the header
        (sizes, in and out), then the estimate and its reservation (402 before any pixel is
        decoded), then the decode (within the replica's pixel budget), then the records."""
        sub = self.check(caller, meta_parts, image_sha256, upload.envelope)
        if upload.sha256 != sub.image_sha256:
            raise BadRequest("the uploaded bytes do not hash to the SHA-256 in the URL",
                             code="hash_mismatch")
        existing = self.threads.get_thread_by_key(sub.key)
        if existing is not None:
            return self._answer(existing, replayed=True)
        if self._backlog() >= self.settings.max_backlog:
            raise BacklogFull(f"{self.settings.max_backlog:,} threads are waiting or running; "
                              "new work is refused until some finish")
        header = read_header(upload.image, self.settings.max_input_pixels)
        check_output_sizes(sub.graph, header.width, header.height,
                           self.settings.output_pixel_limit)
        cost = estimate(sub.graph, header.width, header.height, self._prices())
        quota = self.limiter.quota(sub.domain, sub.account) if self.limiter else None
        if quota is not None:  # a first look, before anything is reserved or decoded
            check_quota(quota, *self.threads.running_threads(sub.domain, sub.account),
                        sub.account != sub.domain)
        self.billing.reserve(sub.account, sub.key, cost)
        try:
            record, created = self._record(sub, upload, header, quota)
        except BaseException:
            self._release_unused(sub.key)
            raise
        if created:
            self.handoff(record.id)
        return self._answer(record, replayed=not created)

    def _record(self, sub: Submission, upload: Upload, header: Header,
                quota: ThreadQuota | None = None) -> tuple[ThreadRecord, bool]:
        # The whole image is decoded once (a JPEG at 1/8 scale): corrupt and truncated images
        # are refused now, with a 4xx, not found later by a worker.
        scale = 64 if header.format == "JPEG" else 1
        with self.decoding.hold(max(1, header.pixels // scale)):
            decode_image(upload.image, self.settings.max_input_pixels, size_hint=(1, 1))
        if self.lifecycle is not None:  # pinned, then put: see tilemore.store.lifecycle
            self.lifecycle.pin(upload.sha256, "input", upload.size)
        input_key = self.blobs.put_file(upload.image, upload.sha256)
        pipeline = sub.graph.pipeline
        record, created = self.threads.create_thread(NewThread(
            domain=sub.domain, account=sub.account, idem_key=sub.key, pipeline=pipeline.name,
            fingerprint=pipeline.fingerprint, meta_parts=sub.meta_parts,
            image_sha256=sub.image_sha256, input_key=input_key,
            output_format=sub.envelope.output_format,
            envelope=sub.envelope.model_dump(mode="json"),
            tasks=[(t.id, t.operator.name) for t in sub.graph.tasks],
        ), quota,  # the exact check: in the insert's transaction
            # and the input's reference with it: the thread is never recorded unreferenced
            also=None if self.lifecycle is None else self.lifecycle.referring(
                sub.domain, "input", input_key, upload.size))
        return record, created

    def _release_unused(self, key: str) -> None:
        """Give back a reservation no thread will use. A thread recorded under the same key
        meanwhile (the same request, sent twice at once) keeps it."""
        try:
            if self.threads.get_thread_by_key(key) is None:
                self.billing.release(key)
        except Exception:  # noqa: BLE001 - the hold sweep releases it later
            log.warning("reservation %s… not released now; the hold sweep will", key[:12])

    def _graph(self, pipeline: str, adjustments_json: str, output_format: str) -> TaskGraph:
        """Validated task graphs, by canonical adjustments: replays skip re-validation (small
        adjustments only, so the cache stays small)."""
        if len(adjustments_json) > GRAPH_CACHE_KEY:
            return build_graph(self.catalog.pipeline(pipeline), json.loads(adjustments_json),
                               output_format)
        return self._cached_graph(pipeline, adjustments_json, output_format)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one service per process, lives as long
    def _cached_graph(self, pipeline: str, adjustments_json: str,
                      output_format: str) -> TaskGraph:
        return build_graph(self.catalog.pipeline(pipeline), json.loads(adjustments_json),
                           output_format)

    def thread(self, caller: Caller, thread_id: str) -> Answer:
        return self._answer(self.own_thread(caller, thread_id))

    def cancel(self, caller: Caller, thread_id: str) -> Answer:
        record = self.own_thread(caller, thread_id)
        if record.status != "processing":
            raise Conflict(f"the thread is already {record.status}", code="already_finished")
        self.threads.request_cancel(thread_id)
        return self._answer(self.own_thread(caller, thread_id))

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
        seconds = self.result_seconds(record)  # what is left of its retention
        link = self.blobs.link(r.key, filename, r.content_type, seconds)
        if link is not None:
            return "redirect", link
        return "bytes", (self.blobs.get(r.key), r.content_type, seconds)

    def result_seconds(self, record: ThreadRecord) -> int | None:
        """Seconds the thread's result is still kept (None: for ever, no lifecycle here);
        :class:`ResultExpired` once it went."""
        if self.lifecycle is None:
            return None
        dates = self.lifecycle.dates(record.id)
        if dates is None or dates.result_until is None:
            # Not dated yet (the end's listener runs just after the status is written, or an
            # older thread the collector has still to date): dated later, from then, so its
            # retention from now is the least it has left.
            return int(self.lifecycle.retention.ttl(record.domain).results)
        if dates.result_expired:
            raise result_expired(record, dates.result_until)
        return max(1, int(dates.result_until - dates.now))

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

    def thread_answer(self, record: ThreadRecord) -> dict[str, Any]:
        """A thread's body, as ``GET /threads/{id}`` answers it (``GET /threads`` lists
        these)."""
        return self._answer(record).body

    def _answer(self, record: ThreadRecord, replayed: bool = False) -> Answer:
        if record.status == "done" and record.result is not None and self.lifecycle:
            try:
                self.result_seconds(record)
            except ResultExpired:
                if replayed:  # the same request again: say so, and how to run it again
                    raise
                record = dataclasses.replace(record, result=None)  # read by id: no link
        headers = {REPLAYED: "true"} if replayed else {}
        if record.status == "processing":
            headers["Retry-After"] = "1"
        body = thread_body(record, self.settings.base_url)  # never the request's Host
        body["account"] = record.account
        # Charges are settled as a thread ends: one still running has been charged nothing.
        running = record.status == "processing"
        body["credits_charged"] = fmt(ZERO if running else self.billing.thread_cost(record.id))
        return Answer(202 if record.status == "processing" else 200, body, headers)


def result_expired(record: ThreadRecord, at: float) -> ResultExpired:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return ResultExpired(
        f"the result of thread {record.id} was deleted at {when}, as its retention says; the "
        f"record stays. To run the same request again (a new thread, charged again), POST "
        f"/threads/{record.id}/retry", thread_id=record.id, expired_at=when)


def check_output_sizes(graph: TaskGraph, width: int, height: int, limit: int) -> None:
    """Refuse work that would make an image larger than ``limit`` pixels at any task, from
    the sizes the operators declare: before anything is reserved, decoded or recorded."""
    for task_id, (_, (w, h)) in graph.sizes(width, height).items():
        if w * h > limit:
            stage = graph.task(task_id).stage
            raise OutputTooLarge(f"stage '{stage}' would make a {w}x{h} = {w * h:,} pixel "
                                 f"image; the limit is {limit:,}")


class BacklogFull(ServiceUnavailable):
    code = "backlog_full"
    retry_after = 5


class OutputTooLarge(ImageTooLarge):
    code = "output_too_large"


class Cached:
    """A value read at most every ``seconds`` (prices change rarely; every submission needs
    them)."""

    def __init__(self, read: Callable[[], Any], seconds: float) -> None:
        self.read, self.seconds = read, seconds
        self._value: Any = None
        self._until = 0.0

    def __call__(self) -> Any:
        now = time.monotonic()
        if now >= self._until:
            self._value, self._until = self.read(), now + self.seconds
        return self._value
