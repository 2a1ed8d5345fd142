"""docs/operators.md runs: each ```python block is executed (as a module of its own), and its
```yaml pipeline is validated and run with the operators the blocks define."""

from __future__ import annotations

import io
import re
import sys
import types
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from PIL import Image as PILImage

from tilemore.cli.authoring import pipeline_schema
from tilemore.engine import LocalBackend
from tilemore.pipeline import build_graph, load_pipeline, run_graph
from tilemore.pipeline.validate import pipeline_problems
from tilemore.registry import OperatorRegistry

DOC = Path(__file__).parents[2] / "docs" / "operators.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


PYTHON = blocks("python")


def test_the_doc_shows_a_transform_a_selector_and_a_sink():
    text = "\n".join(PYTHON)
    for role in ("transform", "selector", "sink"):
        assert f'role = "{role}"' in text
    assert len(PYTHON) >= 6


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_example_runs(index):
    name = f"docs_operators_example_{index}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # as an imported module is: runtime_env_for finds it
    try:
        exec(compile(PYTHON[index], f"{DOC.name}[python {index + 1}]", "exec"), module.__dict__)
    finally:
        del sys.modules[name]


def test_yaml_pipeline_runs_with_the_doc_operators(tmp_path):
    (yaml_text,) = blocks("yaml")
    operators = [b for b in PYTHON if re.search(r"^class \w+\(Operator\)", b, re.M)]
    (tmp_path / "my_ops.py").write_text("\n\n".join(operators))
    path = tmp_path / "soft.yaml"
    path.write_text(yaml_text)
    doc = yaml.safe_load(yaml_text)
    assert doc["operator_modules"] == ["./my_ops.py"]
    jsonschema.validate(doc, pipeline_schema())  # what editors check it against
    assert pipeline_problems(path, OperatorRegistry.with_builtins()) == []
    pipeline = load_pipeline(path, OperatorRegistry.with_builtins())
    buf = io.BytesIO()
    rng = np.random.default_rng(3)
    PILImage.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    backend = LocalBackend()
    try:
        result = run_graph(build_graph(pipeline, {}), buf.getvalue(), backend)
    finally:
        backend.close()
    assert result.output.content_type == "image/tiff"
    assert PILImage.open(io.BytesIO(result.output.data)).size == (32, 24)
    assert result.qc[0].pick in ("little", "lot")
