"""A batch from start to end: check everything (nothing is written on a bad source, bad
adjustments or an unknown account), plan, run on Ray, write the report.

Two phases so a caller can start Ray between them: :func:`prepare` needs no Ray and raises
on anything fatal; :func:`run` needs a connected Ray and never raises for one bad image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilemore.batch.locations import LocationError, parse_location
from tilemore.batch.plan import REPORT_NAME, Plan, make_plan, run_key
from tilemore.batch.report import BatchReport
from tilemore.batch.worker import BatchSpec, Outcome
from tilemore.billing.ledger import open_ledger
from tilemore.catalog import Catalog
from tilemore.errors import NotFound
from tilemore.pipeline.graph import build_graph
from tilemore.settings import Settings
from tilemore.store import open_store


@dataclass(frozen=True)
class BatchJob:
    source: str  # a folder, or s3://bucket/prefix
    dest: str
    adjustments: Mapping[str, Any] = field(default_factory=dict)
    output_format: str = "jpeg"
    pipeline: str | None = None  # default: the settings' default pipeline
    pipeline_files: tuple[Path, ...] = ()
    account: str = "demo"  # a domain, or domain/sub-account
    workers: int | None = None  # default: as many as the cluster's free resources hold


@dataclass
class Prepared:
    spec: BatchSpec
    plan: Plan
    report: BatchReport
    workers: int | None = None


def prepare(job: BatchJob, settings: Settings) -> Prepared:
    """Validate, resolve and list; raises :class:`~tilemore.errors.TilemoreError` on
    anything that stops the whole batch. Writes nothing."""
    settings = _absolute(settings)
    catalog = Catalog.load(settings, list(job.pipeline_files))
    pipeline = catalog.pipeline(job.pipeline or settings.default_pipeline)
    adjustments = dict(job.adjustments)
    graph = build_graph(pipeline, adjustments, job.output_format)
    domain = account_domain(settings, job.account)
    source = parse_location(job.source, settings)
    dest = parse_location(job.dest, settings)
    source.check(create=False)
    dest.check(create=True)
    plan = make_plan(source, dest, job.output_format)
    with open_ledger(settings.db) as ledger:
        prices = ledger.prices()
    spec = BatchSpec(graph, job.output_format, source, dest, job.account, domain,
                     run_key(account=job.account, adjustments=adjustments,
                             output_format=job.output_format, pipeline=pipeline.name,
                             fingerprint=pipeline.fingerprint), prices, settings)
    report = BatchReport(source.uri(), dest.uri(), pipeline.name, pipeline.fingerprint,
                         job.output_format, adjustments, job.account, plan)
    return Prepared(spec, plan, report, job.workers)


def _absolute(settings: Settings) -> Settings:
    """The paths workers open, made absolute: their working directory is not ours."""
    paths = {k: getattr(settings, k) for k in ("data_dir", "database", "dncnn_weights")}
    return settings.model_copy(update={k: v.resolve() for k, v in paths.items() if v})


def account_domain(settings: Settings, account: str) -> str:
    """The domain that owns ``account`` (``domain`` or ``domain/sub``); 404 when unknown."""
    domain, _, sub = account.partition("/")
    with open_store(settings.db) as store:
        if not store.domain_exists(domain):
            raise NotFound(f"no domain '{domain}'", code="unknown_account")
        if sub and store.account(account) is None:
            raise NotFound(f"no sub-account '{sub}' in domain '{domain}'",
                           code="unknown_account")
    return domain


def run(prepared: Prepared, on_outcome: Callable[[Outcome], None] | None = None
        ) -> BatchReport:
    """Run the plan on the connected Ray cluster; write the report to the destination, also
    when interrupted."""
    from tilemore.batch.ray_run import run_on_ray  # Ray only here

    report, plan = prepared.report, prepared.plan
    report.started_at = time.time()

    def seen(outcome: Outcome) -> None:
        report.add(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    report.interrupted = True
    try:
        if plan.todo:
            report.workers = run_on_ray(prepared.spec, plan.todo, seen, prepared.workers)
        report.interrupted = False
    finally:
        report.finished_at = time.time()
        write_report(prepared, report)
    return report


def write_report(prepared: Prepared, report: BatchReport) -> None:
    try:
        prepared.spec.dest.write(REPORT_NAME, report.to_json(), "application/json")
    except Exception as exc:  # noqa: BLE001 - the outputs are written; say what is missing
        raise LocationError(f"the outputs are written, but the report is not: {exc}") from exc
