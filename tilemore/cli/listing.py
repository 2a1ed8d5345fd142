"""``tilemore operators`` (and ``operators describe``) and ``tilemore pipelines``: what is
registered, as tables or JSON."""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python
from rich.console import Console
from rich.table import Table

from tilemore.catalog import Catalog
from tilemore.cli.format import credits, echo_json, json_option
from tilemore.operator import Operator
from tilemore.registry import expected_process, module_requirements
from tilemore.settings import Settings

_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of")
_SHOWN = {"ge": "≥ {}", "gt": "> {}", "le": "≤ {}", "lt": "< {}", "min_length": "length ≥ {}",
          "max_length": "length ≤ {}", "multiple_of": "multiple of {}"}

pipeline_file_option = click.option(
    "--pipeline-file", type=click.Path(path_type=Path), multiple=True,
    help="Also load this pipeline file and the operator modules it names (repeatable).")


@click.group("operators", invoke_without_command=True)
@pipeline_file_option
@json_option
@click.pass_context
def operators_cmd(ctx: click.Context, pipeline_file: tuple[Path, ...], as_json: bool) -> None:
    """List the registered operators (describe one: tilemore operators describe NAME)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = pipeline_file
        return
    catalog = Catalog.load(Settings.from_env(), list(pipeline_file))
    if as_json:
        echo_json([describe_operator(op) for op in catalog.registry])
        return
    table = Table(title="operators", title_justify="left")
    table.add_column("name", no_wrap=True)
    for col in ("ver", "role", "resources", "halo", "price (credits)", "parameters"):
        table.add_column(col)
    for op in catalog.registry:
        table.add_row(op.name, op.version, op.role, _resources(op), str(op.halo), _price(op),
                      ", ".join(op.Params.model_fields))
    Console().print(table)


@operators_cmd.command("describe")
@click.argument("name")
@pipeline_file_option
@json_option
@click.pass_obj
def describe_cmd(obj: tuple[Path, ...] | None, name: str, pipeline_file: tuple[Path, ...],
                 as_json: bool) -> None:
    """Show operator NAME: each parameter's type, default, range and description, and its
    role, resources, halo and price."""
    catalog = Catalog.load(Settings.from_env(), [*(obj or ()), *pipeline_file])
    op = catalog.registry.get(name)
    info = describe_operator(op)
    if as_json:
        echo_json(info)
        return
    out = Console()
    out.print(f"[bold]{op.name}[/bold] {op.version} — a {op.role}"
              + (f": {op.description}" if op.description else ""), soft_wrap=True)
    out.print(f"  defined in  {op.__module__}.{op.__qualname__}", highlight=False)
    out.print(f"  process     {expected_process(op.role)}", highlight=False)
    out.print(f"  resources   {_resources(op)}", highlight=False)
    out.print(f"  halo        {op.halo} px" + (f", tiling {op.tiling}" if op.tiling else
                                               ", runs on whole images"), highlight=False)
    out.print(f"  price       {_price(op)} credits", highlight=False)
    if info["requirements"]:
        out.print(f"  requires    {', '.join(info['requirements'])}", highlight=False)
    table = Table(title="parameters", title_justify="left")
    for col in ("name", "type", "default", "range", "description"):
        table.add_column(col, overflow="fold")
    for p in info["parameters"]:
        default = "(required)" if p["required"] else repr(p["default"])
        table.add_row(p["name"], p["type"], default, ", ".join(
            _SHOWN[k].format(v) for k, v in p["range"].items()), p["description"] or "")
    if info["parameters"]:
        out.print(table)
    else:
        out.print("  parameters  none")


def describe_operator(op: type[Operator]) -> dict[str, Any]:
    """Everything an author or caller needs to know of ``op``, as plain JSON data."""
    info = op.describe()
    info["parameters"] = _parameters(op.Params)
    info["tiling"] = op.tiling
    info["module"] = op.__module__
    info["requirements"] = module_requirements(sys.modules.get(op.__module__))
    info["params_schema"] = op.Params.model_json_schema()
    return to_jsonable_python(info)


def _parameters(model: type[BaseModel], prefix: str = "", depth: int = 0) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for name, f in model.model_fields.items():
        rows.append({
            "name": prefix + name,
            "type": type_name(f.annotation),
            "required": f.is_required(),
            "default": None if f.default is PydanticUndefined else to_jsonable_python(
                f.get_default(call_default_factory=True)),
            "range": _range(f),
            "description": f.description,
        })
        if depth < 2:  # the fields of a nested model (shifter's crop.width …)
            for sub in _models(f.annotation):
                rows.extend(_parameters(sub, f"{prefix}{name}.", depth + 1))
    return rows


def _range(f: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in f.metadata:
        for key in _CONSTRAINTS:
            value = getattr(m, key, None)
            if value is not None:
                out[key] = value
    return out


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def type_name(annotation: Any) -> str:
    """``int``, ``'jpeg' | 'png'``, ``Crop | None``: a type as an author writes it."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return re.sub(r"\b(?:[A-Za-z_][\w]*\.)+(\w+)", r"\1", str(annotation))


def _resources(op: type[Operator]) -> str:
    r = op.resources
    res = f"{r.num_cpus:g} CPU" + (f", {r.num_gpus:g} GPU" if r.num_gpus else "")
    res += " (or CPU)" if r.gpu_optional else ""
    return res + f", {r.memory_per_megapixel / 2**20:g} MB/MP"


def _price(op: type[Operator]) -> str:
    return f"{credits(op.price.per_call)} + {credits(op.price.per_megapixel)}/MP"


@click.command("pipelines")
@pipeline_file_option
@json_option
def pipelines_cmd(pipeline_file: tuple[Path, ...], as_json: bool) -> None:
    """List the registered pipelines, their stages and choices."""
    catalog = Catalog.load(Settings.from_env(), list(pipeline_file))
    if as_json:
        echo_json([_pipeline_json(catalog.pipelines[n]) for n in sorted(catalog.pipelines)])
        return
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


def _pipeline_json(p) -> dict[str, Any]:
    stages = []
    for s in p.stages:
        entry: dict[str, Any] = {"name": s.name, "inputs": list(s.inputs)}
        if s.step is not None:
            entry["operator"] = s.step.operator.name
        else:
            entry["choices"], entry["default"] = list(s.choices), s.default
        stages.append(entry)
    return {"name": p.name, "version": p.version, "description": p.description,
            "file": str(p.path), "output_stage": p.output_stage,
            "fingerprint": p.fingerprint, "stages": stages}
