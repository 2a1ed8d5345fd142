"""Pipeline files the tests need, written on the fly."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tilemore.pipeline import Pipeline, load_pipeline
from tilemore.registry import OperatorRegistry

OPERATORS = Path(__file__).parent / "operators.py"  # the operator module the pipelines load


def pipeline_from(tmp_path: Path, body: str, name: str = "t") -> Pipeline:
    text = f"pipeline: {name}\noperator_modules: ['{OPERATORS}']\n" + textwrap.dedent(body)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_pipeline(path, OperatorRegistry.with_builtins())


def one_stage(tmp_path: Path, stage: str, operator: str, extra: str = "") -> Pipeline:
    """decode → ``stage`` running ``operator`` (``extra``: more of its YAML mapping, such as
    ``", retry: {...}"``) → a PNG encoder."""
    return pipeline_from(tmp_path, f"""
        stages:
          - {{name: decode, operator: decode}}
          - {{name: {stage}, operator: {operator}{extra}}}
          - {{name: encoder, operator: encoder, params: {{format: png}}}}
    """)


TWO_SPINNERS = """
algorithms:
  race:
    branches:
      left: {operator: spin}
      right: {operator: invert}
    select: {operator: pick-brightest}
  spin2:
    branches:
      a: {operator: spin}
      b: {operator: spin}
    select: {operator: pick-brightest}
stages:
  - {name: decode, operator: decode}
  - {name: master, choices: [spin2, race]}
  - {name: encoder, operator: encoder, params: {format: png}}
"""
