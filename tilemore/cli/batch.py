"""``tilemore batch``: a folder or an S3 prefix through a pipeline with Ray Data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tilemore.cli.errors import CLIError
from tilemore.cli.run import load_adjustments
from tilemore.cli.state import announce, cli_settings

if TYPE_CHECKING:
    from tilemore.batch import BatchReport, Prepared
    from tilemore.settings import Settings

SHOWN_FAILURES = 20


@click.command("batch")
@click.argument("source")
@click.argument("dest")
@click.option("-a", "--adjustments", "adjustments_arg", metavar="FILE|JSON",
              help="Adjustments for every image: a JSON file, or inline JSON ('{...}').")
@click.option("-f", "--format", "output_format", default="jpeg", show_default=True,
              help="Output format: jpeg, png or webp (outputs are named .jpg, .png, .webp).")
@click.option("-p", "--pipeline", "pipeline_name", help="Pipeline name (default: denoised).")
@click.option("--pipeline-file", type=click.Path(path_type=Path), multiple=True,
              help="Also load this pipeline file (repeatable).")
@click.option("--account", default="demo", show_default=True,
              help="Who is billed: a domain, or DOMAIN/SUB-ACCOUNT.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker actors (default: as many as the cluster's free resources hold).")
def batch_cmd(source: str, dest: str, adjustments_arg: str | None, output_format: str,
              pipeline_name: str | None, pipeline_file: tuple[Path, ...], account: str,
              workers: int | None) -> None:
    """Run every image under SOURCE through a pipeline and write the results under DEST.

    SOURCE and DEST are folders or s3://bucket/prefix (endpoint and region from
    TILEMORE_S3_ENDPOINT and TILEMORE_S3_REGION). Each output keeps its input's relative
    name with the output format's extension. Outputs already at DEST are skipped, so an
    interrupted batch resumes by running it again; files that cannot be processed are
    listed with the reason in DEST/_tilemore_batch_report.json. Every operation is billed to
    --account as an API run's is, once per image content, however often the batch runs.
    """
    from tilemore.batch import BatchJob, LocationError, prepare  # boto3: only when asked

    settings = cli_settings()  # absolute paths: Ray workers run in other folders
    announce(settings)  # the ledger it bills to
    adjustments = load_adjustments(adjustments_arg)
    if account == "demo":
        _ensure_demo(settings)
    job = BatchJob(source, dest, adjustments, output_format, pipeline_name, pipeline_file,
                   account, workers)
    try:
        prepared = prepare(job, settings)
    except LocationError as exc:
        raise CLIError(exc.message) from None
    plan = prepared.plan
    console = Console(stderr=True)
    console.print(f"{plan.inputs} inputs in {prepared.report.source}: {len(plan.todo)} to run, "
                  f"{len(plan.existing)} already done at {prepared.report.dest}")
    if plan.todo:
        from tilemore.engine.ray_backend import ensure_ray  # Ray only when there is work

        with console.status("starting Ray…"):
            cpus = settings.ray_num_cpus or os.cpu_count() or 1  # one worker per core
            ensure_ray(settings.model_copy(update={"ray_num_cpus": cpus}), quiet=True)
    report = _run_with_progress(prepared, console)
    _summary(report)


def _ensure_demo(settings: Settings) -> None:
    """The demo domain with its demo credits, as ``tilemore serve`` makes it on first run, so
    a batch works on a fresh checkout."""
    from tilemore.cli.serve import DEMO_DOMAIN, demo_token
    from tilemore.store import open_store

    with open_store(settings.db) as store:
        exists = store.domain_exists(DEMO_DOMAIN)
    if not exists:
        demo_token(settings)


def _run_with_progress(prepared: Prepared, console: Console) -> BatchReport:
    from tilemore.batch import Outcome, run

    columns = (TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        job = bar.add_task("batch", total=len(prepared.plan.todo), failed=0, last="")
        failed = 0

        def advance(o: Outcome) -> None:
            nonlocal failed
            failed += o.status != "done"
            bar.update(job, advance=1, failed=failed,
                       last=o.name if o.status == "done" else f"{o.name}: {o.code}")

        return run(prepared, advance)


def _summary(report: BatchReport) -> None:
    from tilemore.batch import REPORT_NAME

    out = Console()
    c = report.counts()
    rate = c["done"] / report.seconds if report.seconds > 0 else 0.0
    out.print(f"done {c['done']}, already done {c['already_done']}, failed {c['failed']} "
              f"of {c['inputs']} inputs in {report.seconds:.1f} s ({rate:.2f} images/s"
              f"{f', {report.workers} workers' if report.workers else ''}); "
              f"charged {report.credits.normalize():f} credits to {report.account}",
              soft_wrap=True)
    skipped = report.skipped()
    for row in skipped[:SHOWN_FAILURES]:
        reason = row["reason"].splitlines()[0] if row["reason"] else ""
        out.print(f"  skipped {row['path']}: [{row['code']}] {reason}", markup=False,
                  highlight=False, soft_wrap=True)
    if len(skipped) > SHOWN_FAILURES:
        out.print(f"  … and {len(skipped) - SHOWN_FAILURES} more")
    out.print(f"report: {report.dest.rstrip('/')}/{REPORT_NAME}", markup=False,
              highlight=False, soft_wrap=True)
