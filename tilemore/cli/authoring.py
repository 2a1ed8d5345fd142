"""Authoring tools: ``tilemore validate``, ``tilemore schema pipeline`` and ``tilemore init
operator``, for people who write operators and pipeline files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from tilemore.catalog import PIPELINE_SUFFIXES
from tilemore.cli.errors import CLIError
from tilemore.cli.format import echo_json
from tilemore.pipeline.parse import PipelineDoc, Problem
from tilemore.pipeline.validate import pipeline_problems
from tilemore.registry import OperatorRegistry

SCHEMA_ID = "urn:tilemore:schema:pipeline"  # a name, not a download location
MAX_FILES = 1000  # one command line's worth; a bigger set is a folder for `pipelines`


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.pass_context
def validate_cmd(ctx: click.Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Check pipeline FILES (YAML or TOML; a folder: the pipeline files in it) and report
    every problem of every file, each with its file, stage and field. Exit 1 when any file
    has a problem."""
    expanded: list[Path] = []
    for path in files:
        if not path.is_dir():
            expanded.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.suffix in PIPELINE_SUFFIXES)
        if not found:
            raise CLIError(f"{path}: no pipeline files ({', '.join(PIPELINE_SUFFIXES)}) in it")
        expanded.extend(found)
    files = tuple(expanded)
    if len(files) > MAX_FILES:
        raise CLIError(f"at most {MAX_FILES} files at once")
    results = []
    for path in files:
        # A registry per file: one file's operator modules must not make another valid.
        results.append((path, pipeline_problems(path, OperatorRegistry.with_builtins())))
    total = sum(len(p) for _, p in results)
    bad = sum(1 for _, p in results if p)
    if as_json:
        echo_json({"ok": total == 0, "problems": total, "files": [
            {"file": str(path), "ok": not problems,
             "problems": [p.to_dict() for p in problems]} for path, problems in results]})
        if total:
            ctx.exit(1)
        return
    for path, problems in results:
        if not problems:
            click.echo(f"{path}: ok")
        for p in problems:
            click.echo(problem_line(p))
    if total:
        raise CLIError(f"{total} problem{'s' * (total != 1)} in {bad} of {len(files)} "
                       f"file{'s' * (len(files) != 1)}")


def problem_line(p: Problem) -> str:
    """``file: stage 's': field 'f': what`` (the parts that apply)."""
    where = p.path + (f": stage '{p.stage}'" if p.stage else "")
    return where + (f": field '{p.field}'" if p.field else "") + f": {p.text}"


@click.group("schema")
def schema_cmd() -> None:
    """JSON Schemas for files Tilemore reads."""


@schema_cmd.command("pipeline")
def schema_pipeline() -> None:
    """Print the JSON Schema of pipeline files (YAML or TOML), for editors: save it and
    point the YAML language server at it (see docs/cli.md)."""
    echo_json(pipeline_schema(sorted(op.name for op in OperatorRegistry.with_builtins())))


def pipeline_schema(known_operators: list[str] | None = None) -> dict[str, Any]:
    """The pipeline document model as JSON Schema (draft 2020-12), plus what the model checks
    in code: a stage has ``operator`` or ``choices``. Built-in operator names are offered
    as examples (not an enum: operator modules add others)."""
    schema = PipelineDoc.model_json_schema()
    defs = schema.get("$defs", {})
    stage = defs.get("StageDoc")
    if stage is not None:
        stage["oneOf"] = [{"required": ["operator"], "not": {"required": ["choices"]}},
                          {"required": ["choices"], "not": {"required": ["operator"]}}]
    for name in ("StageDoc", "OperatorRef"):
        op = defs.get(name, {}).get("properties", {}).get("operator")
        if op is not None and known_operators:
            op["examples"] = list(known_operators)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "Tilemore pipeline file", **{k: v for k, v in schema.items()
                                                   if k != "title"}}


_OPERATOR_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@click.group("init")
def init_cmd() -> None:
    """Start new work from a template."""


@init_cmd.command("operator")
@click.argument("name")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Write the files here.")
@click.option("--force", is_flag=True, help="Replace files that exist.")
def init_operator(name: str, folder: Path, force: bool) -> None:
    """Write operator NAME's module, a pipeline that runs it and a pytest test that passes."""
    if not _OPERATOR_NAME.match(name):
        raise CLIError(f"operator name '{name}': lowercase letters, digits and -, starting "
                       "with a letter (at most 63)")
    if name in OperatorRegistry.with_builtins():
        raise CLIError(f"'{name}' is a built-in operator; choose another name")
    module = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in module.split("_"))
    files = {
        f"{module}.py": OPERATOR_TEMPLATE,
        f"{name}.yaml": PIPELINE_TEMPLATE,
        f"test_{module}.py": TEST_TEMPLATE,
    }
    folder.mkdir(parents=True, exist_ok=True)
    existing = [f for f in files if (folder / f).exists()]
    if existing and not force:
        raise CLIError(f"{', '.join(existing)} exist{'s' * (len(existing) == 1)} in {folder} "
                       "(--force replaces)")
    for filename, template in files.items():
        text = template.replace("{name}", name).replace("{module}", module) \
            .replace("{Class}", cls)
        (folder / filename).write_text(text, encoding="utf-8")
        click.echo(f"wrote {folder / filename}")
    click.echo(f"next: cd {folder} && python -m pytest test_{module}.py && "
               f"tilemore validate {name}.yaml")


OPERATOR_TEMPLATE = '''"""{name}: a Tilemore operator (a transform: an image in, an image out).

Test it:      python -m pytest test_{module}.py
Check it:     tilemore validate {name}.yaml
Describe it:  tilemore operators describe {name} --pipeline-file {name}.yaml
Run it:       tilemore run photo.jpg --pipeline-file {name}.yaml -p {name} -o out.png
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from pydantic import Field

from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams, Price, Resources

# Packages this module needs on the workers (pip requirement strings, e.g. "scipy>=1.11"):
# Ray installs them in the runtime_env of this module's replicas. Empty: the cluster's own.
REQUIREMENTS: list[str] = []


class {Class}Params(OperatorParams):
    amount: float = Field(0.5, ge=0.0, le=1.0,
                          description="how far each pixel moves towards white")


class {Class}(Operator):
    name = "{name}"
    version = "1"  # bump it when the output changes: it is part of the pipeline fingerprint
    role = "transform"
    description = "Lighten the image towards white"
    resources = Resources(num_cpus=1, memory_per_megapixel=16 * 2**20)
    Params = {Class}Params
    price = Price(per_call=Decimal("0"), per_megapixel=Decimal("0.0001"))

    def setup(self) -> None:
        # Once per replica: load models here. self.context has the device ("cpu" or
        # "cuda"), tile_memory_bytes, max_input_pixels and this operator's own settings
        # (self.context.options, from TILEMORE_OPERATOR_SETTINGS under its name).
        pass

    def process(self, params: {Class}Params, image: Image) -> Image:
        rgb = image.rgb().astype(np.float32)
        out = rgb + (255.0 - rgb) * params.amount
        return image.with_rgb(np.clip(out + 0.5, 0, 255).astype(np.uint8))
'''

PIPELINE_TEMPLATE = '''# Runs the {name} operator. Check it: tilemore validate {name}.yaml
pipeline: {name}
version: "1"
description: Decode, {name}, encode as PNG
operator_modules:
  - ./{module}.py
stages:
  - name: decode
    operator: decode
  - name: {name}
    operator: {name}
    params: {amount: 0.25}
  - name: encoder
    operator: encoder
    params: {format: png}
'''

TEST_TEMPLATE = '''"""Tests of the {name} operator and its pipeline, without Ray."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pydantic import ValidationError
from {module} import {Class}

from tilemore.engine import LocalBackend
from tilemore.pipeline import build_graph, load_pipeline, run_graph
from tilemore.registry import OperatorRegistry
from tilemore.testing import run_operator

HERE = Path(__file__).parent


def test_moves_pixels_towards_white():
    image = np.full((16, 24, 3), 100, np.uint8)
    out = run_operator({Class}, image, {"amount": 0.5})
    assert out.pixels.shape == (16, 24, 3)
    assert (out.pixels == 178).all()  # 100 + (255 - 100) * 0.5, rounded


def test_amount_zero_keeps_the_image():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    assert np.array_equal(run_operator({Class}, image, {"amount": 0}).pixels, image)


def test_amount_out_of_range_is_refused():
    with pytest.raises(ValidationError):
        run_operator({Class}, np.zeros((4, 4, 3), np.uint8), {"amount": 2})


def test_pipeline_runs_in_process():
    pipeline = load_pipeline(HERE / "{name}.yaml", OperatorRegistry.with_builtins())
    buf = io.BytesIO()
    PILImage.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(buf, "PNG")
    backend = LocalBackend()
    try:
        result = run_graph(build_graph(pipeline, {}, "png"), buf.getvalue(), backend)
    finally:
        backend.close()
    out = np.asarray(PILImage.open(io.BytesIO(result.output.data)))
    assert (out == 139).all()  # the pipeline's amount 0.25: 100 + 155 * 0.25, rounded
'''
