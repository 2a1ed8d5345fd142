"""``tilemore operators`` and ``tilemore pipelines``: what is registered, as tables."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tilemore.catalog import Catalog
from tilemore.settings import Settings


@click.command("operators")
@click.option("--pipeline-file", type=click.Path(path_type=Path), multiple=True,
              help="Also load this pipeline file and the operator modules it names.")
def operators_cmd(pipeline_file: tuple[Path, ...]) -> None:
    """List the registered operators."""
    catalog = Catalog.load(Settings.from_env(), list(pipeline_file))
    table = Table(title="operators", title_justify="left")
    table.add_column("name", no_wrap=True)
    for col in ("ver", "role", "resources", "halo", "price (credits)", "parameters"):
        table.add_column(col)
    for op in catalog.registry:
        r, p = op.resources, op.price
        res = f"{r.num_cpus:g} CPU" + (f", {r.num_gpus:g} GPU" if r.num_gpus else "")
        res += " (or CPU)" if r.gpu_optional else ""
        res += f", {r.memory_per_megapixel / 2**20:g} MB/MP"
        price = f"{_credits(p.per_call)} + {_credits(p.per_megapixel)}/MP"
        table.add_row(op.name, op.version, op.role, res, str(op.halo), price,
                      ", ".join(op.Params.model_fields))
    Console().print(table)


@click.command("pipelines")
@click.option("--pipeline-file", type=click.Path(path_type=Path), multiple=True,
              help="Also load this pipeline file.")
def pipelines_cmd(pipeline_file: tuple[Path, ...]) -> None:
    """List the registered pipelines, their stages and choices."""
    catalog = Catalog.load(Settings.from_env(), list(pipeline_file))
    table = Table(title="pipelines", title_justify="left")
    for col in ("pipeline", "version", "stage", "runs", "file"):
        table.add_column(col)
    for name in sorted(catalog.pipelines):
        p = catalog.pipelines[name]
        for i, stage in enumerate(p.stages):
            if stage.step is not None:
                runs = stage.step.operator.name
            else:
                runs = " | ".join(f"{c}*" if c == stage.default else c for c in stage.choices)
            table.add_row(name if i == 0 else "", p.version if i == 0 else "", stage.name,
                          runs, p.path.name if i == 0 else "")
        table.add_section()
    table.caption = "* the default choice"
    Console().print(table)


def _credits(value) -> str:
    return f"{value.normalize():f}"
