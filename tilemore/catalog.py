"""What this installation can run: the operator registry and every pipeline file it knows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import reduce
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from tilemore.errors import PipelineFileError, TilemoreError, UnknownPipeline
from tilemore.operator import Operator
from tilemore.pipeline.parse import PipelineDoc, parse_pipeline
from tilemore.pipeline.validate import Pipeline, Step, validate_pipeline
from tilemore.registry import OperatorRegistry
from tilemore.settings import Settings

PIPELINE_SUFFIXES = (".yaml", ".yml", ".toml")


PIPELINE_GROUP = "tilemore.pipelines"  # entry points naming a function that gives a folder


def builtin_pipeline_dirs() -> list[Path]:
    """The installed packages' pipeline folders (``tilemore.pipelines`` entry points: the
    example pipelines' is in pyproject.toml)."""
    found = sorted(entry_points(group=PIPELINE_GROUP), key=lambda ep: (ep.value, ep.name))
    return [Path(ep.load()()) for ep in found]


def builtin_pipeline_dir() -> Path:
    """The example pipelines' folder."""
    (first, *_) = builtin_pipeline_dirs() or [None]
    if first is None:
        raise FileNotFoundError(f"no '{PIPELINE_GROUP}' entry points: install the project")
    return first


class PipelineVersions(Protocol):
    """Where pipeline versions are kept (the thread registry)."""

    def record_pipeline(self, fingerprint: str, name: str, path: str,
                        document: dict[str, Any]) -> None: ...

    def pipeline_version(self, fingerprint: str) -> tuple[str, str, dict[str, Any]] | None: ...


@dataclass
class Catalog:
    registry: OperatorRegistry
    pipelines: dict[str, Pipeline]
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # fingerprint → doc

    @classmethod
    def load(cls, settings: Settings | None = None, extra: list[Path] | None = None) -> Catalog:
        """The built-ins plus ``settings.pipeline_paths`` and ``extra`` (files or folders).
        A later file may replace an earlier pipeline of the same name."""
        settings = settings or Settings()
        registry = OperatorRegistry.with_builtins()
        pipelines: dict[str, Pipeline] = {}
        documents: dict[str, dict[str, Any]] = {}
        for path in _pipeline_files([*builtin_pipeline_dirs(), *settings.pipeline_paths,
                                     *(extra or [])]):
            doc = parse_pipeline(path)
            pipeline = validate_pipeline(doc, path, registry)
            pipelines[pipeline.name] = pipeline
            documents[pipeline.fingerprint] = doc.model_dump(mode="json")
        return cls(registry, pipelines, documents)

    def record_versions(self, versions: PipelineVersions) -> None:
        """Keep this deployment's pipeline definitions beside the threads they run."""
        for p in self.pipelines.values():
            versions.record_pipeline(p.fingerprint, p.name, str(p.path),
                                     self.documents[p.fingerprint])

    def version(self, name: str, fingerprint: str, versions: PipelineVersions) -> Pipeline:
        """Pipeline ``name`` as it was when a thread was accepted under ``fingerprint``: the
        deployed one, or a recorded earlier definition that the operators deployed now still
        run exactly (the same versions); else ``pipeline_changed``."""
        current = self.pipeline(name)
        if current.fingerprint == fingerprint:
            return current
        recorded = versions.pipeline_version(fingerprint)
        changed = f"pipeline '{name}' changed since the thread was accepted"
        if recorded is None:
            raise TilemoreError(f"{changed}, and that version was not kept; submit it again",
                                code="pipeline_changed")
        _, path, document = recorded
        try:
            old = validate_pipeline(PipelineDoc.model_validate(document), Path(path),
                                    self.registry)
        except TilemoreError as exc:
            raise TilemoreError(f"{changed}, and its version no longer loads ({exc.message}); "
                                "submit it again", code="pipeline_changed") from None
        if old.fingerprint != fingerprint:  # an operator it used has another version now
            raise TilemoreError(f"{changed}, and the operators it ran were replaced; submit it "
                                "again", code="pipeline_changed")
        return old

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
