"""What this installation can run: the operator registry and every pipeline file it knows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import reduce
from importlib import resources
from pathlib import Path

from tilemore.errors import PipelineFileError, UnknownPipeline
from tilemore.operator import Operator
from tilemore.pipeline.validate import Pipeline, Step, load_pipeline
from tilemore.registry import OperatorRegistry
from tilemore.settings import Settings

PIPELINE_SUFFIXES = (".yaml", ".yml", ".toml")


def builtin_pipeline_dir() -> Path:
    return Path(str(resources.files("tilemore_operators") / "pipelines"))


@dataclass
class Catalog:
    registry: OperatorRegistry
    pipelines: dict[str, Pipeline]

    @classmethod
    def load(cls, settings: Settings | None = None, extra: list[Path] | None = None) -> Catalog:
        """The built-ins plus ``settings.pipeline_paths`` and ``extra`` (files or folders).
        A later file may replace an earlier pipeline of the same name."""
        settings = settings or Settings()
        registry = OperatorRegistry.with_builtins()
        pipelines: dict[str, Pipeline] = {}
        for path in _pipeline_files([builtin_pipeline_dir(), *settings.pipeline_paths,
                                     *(extra or [])]):
            pipeline = load_pipeline(path, registry)
            pipelines[pipeline.name] = pipeline
        return cls(registry, pipelines)

    def operators_in_use(self) -> list[type[Operator]]:
        """Every operator some pipeline can run, repeated as often as one graph may use it
        at once (two branches of one denoiser need two replicas)."""
        most: Counter[type[Operator]] = Counter()
        for pipeline in self.pipelines.values():
            most |= Counter(_operators(pipeline))
        return list(most.elements())

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise UnknownPipeline(
                f"unknown pipeline '{name}' (known: {', '.join(sorted(self.pipelines))})"
            ) from None


def _pipeline_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in PIPELINE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise PipelineFileError(path, "no such pipeline file or folder")
    return files


def _operators(pipeline: Pipeline) -> list[type[Operator]]:
    ops: list[type[Operator]] = []
    for stage in pipeline.stages:
        if stage.step is not None:
            ops.append(stage.step.operator)
        per_choice = [Counter([c.operator]) if isinstance(c, Step) else
                      Counter([*(b.operator for b in c.branches.values()), c.select.operator])
                      for c in stage.choices.values()]
        ops.extend(reduce(lambda a, b: a | b, per_choice, Counter()).elements())
    return ops
