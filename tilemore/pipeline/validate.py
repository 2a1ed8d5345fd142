"""Phase 2: resolve a parsed pipeline against the operator registry and check it whole.

Every error names the file, the stage and the problem: unknown operator, duplicate stage,
bad parameter type, unknown input, cycle, an operator in a role it cannot play.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tilemore.errors import PipelineFileError, UnknownOperator
from tilemore.operator import Operator, Role
from tilemore.pipeline.parse import OperatorRef, PipelineDoc, parse_pipeline
from tilemore.registry import OperatorRegistry
from tilemore.retry import RetryPolicy


@dataclass(frozen=True)
class Step:
    """One operator and the parameters the pipeline file fixes for it."""

    operator: type[Operator]
    params: Mapping[str, Any] = field(default_factory=dict)
    retry: RetryPolicy | None = None  # the pipeline's override of the operator's policy


@dataclass(frozen=True)
class Algorithm:
    name: str
    branches: Mapping[str, Step]
    select: Step
    description: str = ""


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]
    step: Step | None = None
    choices: Mapping[str, Algorithm | Step] = field(default_factory=dict)
    default: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline; ``stages`` are in an order where inputs come first."""

    name: str
    version: str
    path: Path
    stages: tuple[Stage, ...]
    output_stage: str
    fingerprint: str
    description: str = ""

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def load_pipeline(path: Path | str, registry: OperatorRegistry) -> Pipeline:
    """Parse and validate one pipeline file."""
    path = Path(path)
    return validate_pipeline(parse_pipeline(path), path, registry)


def validate_pipeline(doc: PipelineDoc, path: Path, registry: OperatorRegistry) -> Pipeline:
    def fail(problem: str, stage: str | None = None) -> PipelineFileError:
        return PipelineFileError(path, problem, stage=stage)

    for ref in doc.operator_modules:
        try:
            registry.load(ref, relative_to=path.parent)
        except (ImportError, FileNotFoundError, SyntaxError) as exc:
            raise fail(f"cannot load operator module '{ref}': {exc}") from None
        except ValueError as exc:  # two operators with one name
            raise fail(str(exc)) from None

    def step(ref: OperatorRef, stage: str, roles: tuple[Role, ...], what: str) -> Step:
        try:
            op = registry.get(ref.operator)
        except UnknownOperator as exc:
            raise fail(exc.message, stage) from None
        if op.role not in roles:
            raise fail(f"{what} '{op.name}' is a {op.role}; here it must be {' or '.join(roles)}",
                       stage)
        _check_fixed_params(op, ref.params, lambda p: fail(p, stage))
        return Step(op, dict(ref.params), ref.retry)

    algorithms: dict[str, Algorithm] = {}
    for name, algo in doc.algorithms.items():
        where = f"algorithm {name}"
        branches = {
            b: step(ref, where, ("transform",), f"branch '{b}' operator")
            for b, ref in algo.branches.items()
        }
        select = step(algo.select, where, ("selector",), "select operator")
        algorithms[name] = Algorithm(name, branches, select, algo.description)

    seen: set[str] = set()
    stages: list[Stage] = []
    previous: str | None = None
    for sd in doc.stages:
        if sd.name in seen:
            raise fail("duplicate stage name", sd.name)
        seen.add(sd.name)
        inputs = tuple(sd.inputs) if sd.inputs is not None else ((previous,) if previous else ())
        if sd.operator is not None:
            roles: tuple[Role, ...] = ("source",) if not inputs else ("transform", "sink")
            st = step(OperatorRef(operator=sd.operator, params=sd.params, retry=sd.retry),
                      sd.name, roles, "operator")
            stages.append(Stage(sd.name, inputs, step=st, description=sd.description))
        else:
            if not inputs:
                raise fail("a stage with choices needs an input stage", sd.name)
            choices: dict[str, Algorithm | Step] = {}
            for choice in sd.choices:
                if choice in algorithms:
                    choices[choice] = algorithms[choice]
                elif choice in registry:
                    choices[choice] = step(OperatorRef(operator=choice), sd.name,
                                           ("transform",), "choice")
                else:
                    raise fail(f"unknown algorithm or operator '{choice}'", sd.name)
            stages.append(Stage(sd.name, inputs, choices=choices,
                                default=sd.default or sd.choices[0], description=sd.description))
        previous = sd.name

    for st in stages:
        for name in st.inputs:
            if name not in seen:
                raise fail(f"input '{name}' is not a stage of this pipeline", st.name)
    ordered = _topological(stages, fail)

    output = doc.output_stage or doc.stages[-1].name
    if output not in seen:
        raise fail(f"output_stage '{output}' is not a stage of this pipeline")
    out_stage = next(s for s in stages if s.name == output)
    if out_stage.step is None or out_stage.step.operator.role != "sink":
        raise fail("the output stage must run a sink operator (an encoder)", output)

    return Pipeline(
        name=doc.pipeline,
        version=doc.version,
        path=path,
        stages=tuple(ordered),
        output_stage=output,
        fingerprint=_fingerprint(doc, registry),
        description=doc.description,
    )


def _check_fixed_params(op: type[Operator], params: Mapping[str, Any], fail) -> None:
    """Fixed parameters must be known and well typed; required ones may come from callers."""
    try:
        op.Params.model_validate(dict(params))
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] == "missing":
                continue
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                raise fail(f"operator '{op.name}' has no parameter '{loc}'") from None
            raise fail(f"parameter '{loc}' of operator '{op.name}': {err['msg']}") from None


def _topological(stages: list[Stage], fail) -> list[Stage]:
    by_name = {s.name: s for s in stages}
    waiting = {s.name: set(s.inputs) for s in stages}
    ordered: list[Stage] = []
    while waiting:
        ready = [n for n, deps in waiting.items() if not deps]
        if not ready:
            cycle = _find_cycle(waiting)
            raise fail(f"stages form a cycle: {' -> '.join(cycle)}", cycle[0])
        for name in ready:
            ordered.append(by_name[name])
            del waiting[name]
        for deps in waiting.values():
            deps.difference_update(ready)
    return ordered


def _find_cycle(waiting: dict[str, set[str]]) -> list[str]:
    node = next(iter(waiting))
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = next(iter(sorted(waiting[node])))
    return path[path.index(node):] + [node]


def _fingerprint(doc: PipelineDoc, registry: OperatorRegistry) -> str:
    """Changes when the pipeline or any operator version it can use changes (idempotency)."""
    names = {s.operator for s in doc.stages if s.operator} | {
        c for s in doc.stages for c in s.choices if c in registry
    }
    for algo in doc.algorithms.values():
        names |= {b.operator for b in algo.branches.values()} | {algo.select.operator}
    versions = {n: registry.get(n).version for n in sorted(names)}
    blob = json.dumps({"doc": doc.model_dump(mode="json"), "ops": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
