"""Pipelines in four phases, one module each: parse → validate → graph → run."""

from tilemore.pipeline.graph import TaskGraph, build_graph
from tilemore.pipeline.parse import PipelineDoc, parse_pipeline
from tilemore.pipeline.run import QCReport, RunResult, run_graph
from tilemore.pipeline.validate import Pipeline, load_pipeline, validate_pipeline

__all__ = [
    "Pipeline", "PipelineDoc", "QCReport", "RunResult", "TaskGraph", "build_graph",
    "load_pipeline", "parse_pipeline", "run_graph", "validate_pipeline",
]
