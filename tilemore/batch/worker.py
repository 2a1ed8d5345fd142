"""One batch worker, with no Ray in sight: read an image, run the whole task graph on it with
the operators held in this process (the same :class:`OperatorHost` code an API run's replicas
run, parallel branches and QC included), bill it, write the result.

An image that cannot be read, decoded or paid for becomes a failed :class:`Outcome`, never an
exception: one bad file must not stop the batch.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from io import BytesIO
from typing import Any

from PIL import Image as PILImage

from tilemore.batch.charges import Bill, Charge, Charger
from tilemore.batch.locations import Location
from tilemore.batch.plan import CONTENT_TYPES, Item, image_key, thread_id
from tilemore.billing.money import ZERO, fmt
from tilemore.billing.pricing import Overrides, estimate, price_of
from tilemore.engine.backend import LocalBackend
from tilemore.engine.memory import reuse_heap_buffers
from tilemore.errors import TilemoreError
from tilemore.image import Encoded
from tilemore.pipeline.graph import TaskGraph
from tilemore.pipeline.run import Progress, TaskFailed, run_graph
from tilemore.settings import Settings


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs, as plain data (it is shipped to every worker)."""

    graph: TaskGraph
    output_format: str
    source: Location
    dest: Location
    account: str
    domain: str
    run_key: str  # see plan.run_key
    prices: Overrides
    settings: Settings


@dataclass(frozen=True)
class Outcome:
    name: str
    output: str
    status: str  # "done" or "failed"
    code: str = ""
    reason: str = ""
    task: str = ""  # the task that failed, when one did
    thread_id: str = ""
    credits: str = "0"  # newly charged for this image
    seconds: float = 0.0
    qc: str = ""  # the first selector's pick

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Outcome:
        return cls(**value)


class ImageWorker:
    def __init__(self, spec: BatchSpec, billing: Charger) -> None:
        self.spec = spec
        self.billing = billing
        self.backend = LocalBackend(spec.settings)
        self.backend.prepare(t.operator for t in spec.graph.tasks)  # set-up errors: now
        reuse_heap_buffers()

    def close(self) -> None:
        self.backend.close()

    def process(self, items: list[Item]) -> list[Outcome]:
        """A block of images: read them all, set their estimates aside in one call, run each,
        charge them all in one call, then write the outputs (charged before written: an
        interrupted batch runs an image again, and its charges, keyed, are not repeated)."""
        jobs = [_Job(item, time.perf_counter()) for item in items]
        try:
            self._prepare(jobs)
            for job in jobs:
                if job.outcome is None:
                    self._run(job)
            self._settle([j for j in jobs if j.ran])
            for job in jobs:
                if job.outcome is None:
                    self._write(job)
        except Exception as exc:  # noqa: BLE001 - a worker-side surprise fails its block only
            detail = traceback.format_exc(limit=3)
            for job in jobs:
                if job.outcome is None:
                    job.outcome = self._failed(job, exc, detail=detail)
        return [job.outcome for job in jobs if job.outcome is not None]

    def _prepare(self, jobs: list[_Job]) -> None:
        spec = self.spec
        holds = []
        for job in jobs:
            try:
                job.data = spec.source.read(job.item.name, spec.settings.max_input_bytes)
            except TilemoreError as exc:
                job.outcome = self._failed(job, exc)
                continue
            job.key = image_key(spec.run_key, job.data)
            size = _declared_size(job.data, spec.settings.max_input_pixels)
            if size is not None:  # an unreadable header goes on to decode, which names it
                holds.append((job, estimate(spec.graph, *size, spec.prices)))
        errors = self.billing.reserve(spec.account, [(j.key, cost) for j, cost in holds])
        for (job, _), error in zip(holds, errors, strict=True):
            if error is not None:  # insufficient credits: this image is not run
                job.outcome = self._failed(job, error)

    def _run(self, job: _Job) -> None:
        spec = self.spec

        def finished(p: Progress) -> None:
            op = spec.graph.task(p.task.task_id).operator
            job.charges.append(Charge(p.task.task_id, op.name, p.task.megapixels,
                                      price_of(op, spec.prices).cost(p.task.megapixels)))

        job.ran = True
        try:
            result = run_graph(spec.graph, job.data, self.backend, finished)
        except TaskFailed as exc:
            # Its finished tasks are still charged, as an API thread's are.
            job.outcome = self._failed(job, exc)
        else:  # only the encoded output waits for the block's charges, not every candidate
            job.output, job.qc = result.output, result.qc[0].pick if result.qc else ""
        finally:
            job.data = b""

    def _settle(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        spec = self.spec
        traced_for = spec.domain if spec.account != spec.domain else None
        bills = [Bill(thread_id(j.key), j.key, j.charges) for j in jobs]
        for job, credits in zip(jobs, self.billing.settle(spec.account, traced_for, bills),
                                strict=True):
            if isinstance(credits, Exception):  # not paid: not written
                job.outcome = self._failed(job, credits)
                continue
            job.credits = credits
            if job.outcome is not None:  # failed in a task: its charges are now known
                job.outcome = replace(job.outcome, credits=fmt(credits))

    def _write(self, job: _Job) -> None:
        assert job.output is not None
        dest = self.spec.dest
        try:
            dest.write(job.item.output, job.output.data, CONTENT_TYPES[self.spec.output_format])
        except Exception as exc:  # noqa: BLE001 - a full disk, S3 out of reach: this image only
            job.outcome = self._failed(job, TilemoreError(
                f"cannot write {dest.uri(job.item.output)}: {exc}", code="write_failed"))
            return
        job.outcome = Outcome(job.item.name, job.item.output, "done",
                              thread_id=thread_id(job.key), credits=fmt(job.credits),
                              seconds=time.perf_counter() - job.started, qc=job.qc)

    def _failed(self, job: _Job, exc: BaseException, *, detail: str = "") -> Outcome:
        task = ""
        if isinstance(exc, TaskFailed):
            task, exc = exc.task_id, exc.error
        code = exc.code if isinstance(exc, TilemoreError) else (
            "operator_failed" if task else "internal_error")
        reason = exc.message if isinstance(exc, TilemoreError) else (
            f"{type(exc).__name__}: {exc}")
        if detail and not isinstance(exc, TilemoreError):
            reason = f"{reason}\n{detail}"
        return Outcome(job.item.name, job.item.output, "failed", code, reason, task,
                       thread_id(job.key) if job.key else "", fmt(job.credits),
                       time.perf_counter() - job.started)


@dataclass
class _Job:
    """One image on its way through :meth:`ImageWorker.process`."""

    item: Item
    started: float
    data: bytes = b""
    key: str = ""
    ran: bool = False
    output: Encoded | None = None
    qc: str = ""  # the first selector's pick
    charges: list[Charge] = field(default_factory=list)
    credits: Decimal = ZERO
    outcome: Outcome | None = None


def _declared_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """The size in the image's header (nothing decoded), for the estimate; None when the
    header is unreadable or declares too many pixels (decode then says which)."""
    try:
        with PILImage.open(BytesIO(data)) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - any header Pillow cannot read
        return None
    return (w, h) if w * h <= max_pixels else None
