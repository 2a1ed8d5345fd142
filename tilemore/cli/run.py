"""``tilemore run``: one image through a pipeline on an embedded local Ray."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tilemore import files
from tilemore.catalog import Catalog
from tilemore.cli.errors import CLIError
from tilemore.engine.backend import Backend
from tilemore.errors import ImageTooLarge
from tilemore.pipeline.graph import FromTask, TaskGraph, build_graph
from tilemore.pipeline.run import Progress as RunProgress
from tilemore.pipeline.run import RunResult, run_graph
from tilemore.settings import Settings

FORMAT_BY_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}


@click.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-a", "--adjustments", "adjustments_arg", metavar="FILE|JSON",
              help="Adjustments: a JSON file, or inline JSON ('{...}').")
@click.option("-f", "--format", "output_format", metavar="FORMAT",
              help="Output format: jpeg, png or webp (default: from -o's suffix, else jpeg).")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path),
              help="Where to write the result (default: INPUT's name + .out.FORMAT).")
@click.option("-p", "--pipeline", "pipeline_name", help="Pipeline name (default: denoised).")
@click.option("--pipeline-file", type=click.Path(path_type=Path), multiple=True,
              help="Also load this pipeline file (repeatable).")
@click.option("--backend", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="ray: operator actors on Ray; local: threads in this process.")
@click.option("--contact-sheet", "sheet_path", type=click.Path(path_type=Path),
              help="Also write a picture of the QC candidates side by side (PNG or JPEG).")
def run_cmd(
    input_path: Path, adjustments_arg: str | None, output_format: str | None,
    output_path: Path | None, pipeline_name: str | None, pipeline_file: tuple[Path, ...],
    backend: str, sheet_path: Path | None,
) -> None:
    """Run INPUT through a pipeline and write the result."""
    settings = Settings.from_env()
    data = read_input(input_path, settings.max_input_bytes)
    adjustments = load_adjustments(adjustments_arg)
    output_format = output_format_for(output_path, output_format)
    if sheet_path is not None and sheet_path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise CLIError(f"--contact-sheet {sheet_path}: end it in .png, .jpg or .jpeg")
    catalog = Catalog.load(settings, list(pipeline_file))
    pipeline = catalog.pipeline(pipeline_name or settings.default_pipeline)
    graph = build_graph(pipeline, adjustments, output_format)  # every check before Ray starts
    output_path = output_path or input_path.with_name(f"{input_path.stem}.out.{output_format}")

    console = Console(stderr=True)
    engine = start_backend(backend, settings, graph, console)
    try:
        result = run_with_progress(graph, data, engine, console)
        sheet = candidates_sheet(graph, result, engine) if sheet_path else None
    finally:
        engine.close()
    write_atomically(output_path, result.output.data)
    if sheet is not None and sheet_path is not None:
        buf = io.BytesIO()
        sheet.save(buf, "JPEG" if sheet_path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
        write_atomically(sheet_path, buf.getvalue())
    Console().print(timing_table(graph, result))
    for qc in result.qc:
        Console().print(qc_table(qc))
    out = result.output
    Console().print(f"wrote {output_path} ({out.content_type}, {out.width}x{out.height}, "
                    f"{len(out.data):,} bytes) in {result.seconds:.2f} s")


def output_format_for(output_path: Path | None, output_format: str | None) -> str:
    """The format to write: ``-f``, else ``-o``'s suffix, else JPEG. An ``-o`` suffix that is
    not an image format Tilemore writes, or that names another format than ``-f``, is
    refused: writing JPEG bytes into ``out.gif`` or ``out.png`` helps nobody."""
    fmt = output_format.lower() if output_format else None
    if fmt == "jpg":
        fmt = "jpeg"
    if output_path is None:
        return fmt or "jpeg"
    suffix = output_path.suffix.lower()
    by_suffix = FORMAT_BY_SUFFIX.get(suffix)
    known = ", ".join(sorted(FORMAT_BY_SUFFIX))
    if by_suffix is None:
        what = f"'{suffix}'" if suffix else "no suffix"
        raise CLIError(f"-o {output_path}: {what} is not a format tilemore writes; end it in "
                       f"one of {known}")
    if fmt is not None and fmt != by_suffix:
        raise CLIError(f"-o {output_path} is a {by_suffix} name but -f says {fmt}; make them "
                       "agree (or drop -f)")
    return by_suffix


def candidates_sheet(graph: TaskGraph, result: RunResult, engine: Backend):
    """The first selector's candidates as one picture (fetched only when asked for)."""
    from tilemore.cli.sheet import contact_sheet

    if not result.qc:
        raise CLIError("--contact-sheet: this run has no QC stage (no algorithm with branches)")
    qc = result.qc[0]
    selector = next(t for t in graph.tasks if t.operator.role == "selector"
                    and t.stage == qc.stage)
    source = next(i for i in selector.inputs if isinstance(i, FromTask))
    candidates = {graph.task(c).branch or c: engine.get(result.handles[c])
                  for c in graph.candidates(selector.id)
                  if c in result.handles}  # QC's plan may have left a branch out
    return contact_sheet(engine.get(result.handles[source.task]), candidates, qc)


def read_input(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ImageTooLarge(f"{path} is {size:,} bytes; the limit is {limit:,}")
        return path.read_bytes()
    except IsADirectoryError:
        raise CLIError(f"{path} is a folder, not an image file") from None
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except PermissionError:
        raise CLIError(f"{path}: permission denied") from None


def load_adjustments(arg: str | None) -> dict[str, Any]:
    if arg is None:
        return {}
    text = arg
    if not arg.lstrip().startswith("{"):
        try:
            text = Path(arg).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CLIError(f"adjustments file {arg}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"adjustments file {arg}: cannot read ({exc})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"adjustments are not valid JSON: {exc.msg} at line {exc.lineno}, "
                       f"column {exc.colno}") from None
    if not isinstance(value, dict):
        raise CLIError("adjustments must be a JSON object, like {\"master\": {...}}")
    return value


def start_backend(kind: str, settings: Settings, graph: TaskGraph, console: Console) -> Backend:
    from tilemore.assembly import open_backend  # Ray only when asked

    operators = [t.operator for t in graph.tasks]  # with repeats: one replica per use
    if kind == "local":
        return open_backend("local", settings, operators)
    with console.status("starting Ray and the operator replicas…"):
        return open_backend("ray", settings, operators)


def run_with_progress(graph: TaskGraph, data: bytes, engine: Backend,
                      console: Console) -> RunResult:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[last]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        job = bar.add_task(graph.pipeline.name, total=len(graph.tasks), last="")

        def advance(p: RunProgress) -> None:
            bar.update(job, completed=p.done, last=f"{p.task.task_id} {p.task.seconds:.2f}s")

        return run_graph(graph, data, engine, on_progress=advance)


def timing_table(graph: TaskGraph, result: RunResult) -> Table:
    t0 = min(s.started for s in result.stats.values())
    table = Table(title=f"pipeline {graph.pipeline.name}: tasks", title_justify="left")
    for col in ("task", "operator", "start s", "took s", "MP", "worker"):
        table.add_column(col, justify="left" if col in ("task", "operator") else "right")
    for task in graph.tasks:
        s = result.stats.get(task.id)
        if s is None:  # a branch QC's plan left out (it did not fit the damage measured)
            table.add_row(task.id, task.operator.name, "", "skipped", "", "")
            continue
        table.add_row(task.id, s.operator, f"{s.started - t0:.3f}", f"{s.seconds:.3f}",
                      f"{s.megapixels:.2f}", f"{s.host}:{s.pid}")
    path = graph.critical_path({k: s.seconds for k, s in result.stats.items()})
    table.caption = f"critical path {path:.3f} s of compute; wall {result.seconds:.3f} s"
    return table


def qc_table(qc) -> Table:
    table = Table(title=f"{qc.stage}: {qc.algorithm} — QC picked {qc.pick}",
                  title_justify="left")
    parts = sorted({k for d in qc.details.values() for k in d if k not in ("score",)})
    for col in ("candidate", "score", *parts, "picked"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for name, score in sorted(qc.scores.items(), key=lambda kv: -kv[1]):
        d = qc.details.get(name, {})
        table.add_row(name, f"{score:.4f}", *(f"{d.get(p, 0):.4f}" for p in parts),
                      "✓" if name == qc.pick else "")
    return table


def write_atomically(path: Path, data: bytes) -> None:
    try:
        files.write_atomically(path, data)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
