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
from tilemore.pipeline.parse import (
    OperatorRef,
    PipelineDoc,
    Problem,
    document_problems,
    load_document,
    parse_pipeline,
)
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
    """Parse and validate one pipeline file; raise its first problem."""
    path = Path(path)
    return validate_pipeline(parse_pipeline(path), path, registry)


def pipeline_problems(path: Path | str, registry: OperatorRegistry) -> list[Problem]:
    """Every problem of one pipeline file, in file order; empty when it is valid. Shape
    problems (phase 1) come alone: names are resolved only in a well-formed document."""
    path = Path(path)
    try:
        data = load_document(path)
    except PipelineFileError as exc:
        return [Problem(exc.path, exc.problem, exc.stage)]
    try:
        doc = PipelineDoc.model_validate(data)
    except ValidationError as exc:
        return document_problems(path, data, exc)
    problems: list[Problem] = []
    _resolve(doc, path, registry, problems)
    return problems


def validate_pipeline(doc: PipelineDoc, path: Path, registry: OperatorRegistry) -> Pipeline:
    problems: list[Problem] = []
    pipeline = _resolve(doc, path, registry, problems)
    if problems or pipeline is None:
        raise problems[0].error()
    return pipeline


def _resolve(doc: PipelineDoc, path: Path, registry: OperatorRegistry,
             problems: list[Problem]) -> Pipeline | None:
    """Resolve ``doc``, appending each problem to ``problems`` and going on where it can;
    the pipeline only when there was none."""

    def fail(message: str, stage: str | None = None, field: str | None = None) -> None:
        problems.append(Problem(str(path), message, stage, field))

    for i, ref in enumerate(doc.operator_modules):
        try:
            registry.load(ref, relative_to=path.parent)
        except (ImportError, FileNotFoundError, SyntaxError) as exc:
            fail(f"cannot load operator module '{ref}': {exc}", field=f"operator_modules.{i}")
        except ValueError as exc:  # two operators with one name, a wrong `process`
            fail(str(exc), field=f"operator_modules.{i}")
        except Exception as exc:  # noqa: BLE001 - the module's own code failed at import
            fail(f"cannot load operator module '{ref}': importing it raised "
                 f"{type(exc).__name__}: {exc}", field=f"operator_modules.{i}")

    def step(ref: OperatorRef, stage: str, roles: tuple[Role, ...], what: str,
             at: str) -> Step | None:
        try:
            op = registry.get(ref.operator)
        except UnknownOperator as exc:
            fail(exc.message, stage, f"{at}operator")
            return None
        if op.role not in roles:
            fail(f"{what} '{op.name}' is a {op.role}; here it must be {' or '.join(roles)}",
                 stage, f"{at}operator")
            return None
        before = len(problems)
        _check_fixed_params(op, ref.params, lambda p, f: fail(p, stage, f"{at}params.{f}"))
        return Step(op, dict(ref.params), ref.retry) if len(problems) == before else None

    algorithms: dict[str, Algorithm | None] = {}
    for name, algo in doc.algorithms.items():
        where = f"algorithm {name}"
        branches = {
            b: step(ref, where, ("transform",), f"branch '{b}' operator", f"branches.{b}.")
            for b, ref in algo.branches.items()
        }
        select = step(algo.select, where, ("selector",), "select operator", "select.")
        ok = select is not None and all(v is not None for v in branches.values())
        algorithms[name] = (Algorithm(name, branches, select, algo.description)  # type: ignore[arg-type]
                            if ok else None)

    inputs_of: dict[str, tuple[str, ...]] = {}
    stages: dict[str, Stage | None] = {}
    previous: str | None = None
    for sd in doc.stages:
        if sd.name in inputs_of:
            fail("duplicate stage name", sd.name, "name")
            previous = sd.name
            continue
        inputs = tuple(sd.inputs) if sd.inputs is not None else ((previous,) if previous else ())
        inputs_of[sd.name] = inputs
        stage: Stage | None = None
        if sd.operator is not None:
            roles: tuple[Role, ...] = ("source",) if not inputs else ("transform", "sink")
            st = step(OperatorRef(operator=sd.operator, params=sd.params, retry=sd.retry),
                      sd.name, roles, "operator", "")
            stage = Stage(sd.name, inputs, step=st, description=sd.description) if st else None
        elif not inputs:
            fail("a stage with choices needs an input stage", sd.name, "inputs")
        else:
            choices: dict[str, Algorithm | Step] = {}
            for choice in sd.choices:
                if choice in algorithms:
                    found = algorithms[choice]
                elif choice in registry:
                    found = step(OperatorRef(operator=choice), sd.name, ("transform",),
                                 "choice", "choices.")
                else:
                    fail(f"unknown algorithm or operator '{choice}'", sd.name, "choices")
                    found = None
                if found is not None:
                    choices[choice] = found
            if len(choices) == len(sd.choices):
                stage = Stage(sd.name, inputs, choices=choices,
                              default=sd.default or sd.choices[0], description=sd.description)
        stages[sd.name] = stage
        previous = sd.name

    for name, inputs in inputs_of.items():
        for i, dep in enumerate(inputs):
            if dep not in inputs_of:
                fail(f"input '{dep}' is not a stage of this pipeline", name, f"inputs.{i}")
    order = _topological({n: {d for d in deps if d in inputs_of}
                          for n, deps in inputs_of.items()}, fail)

    output = doc.output_stage or doc.stages[-1].name
    if output not in inputs_of:
        fail(f"output_stage '{output}' is not a stage of this pipeline", field="output_stage")
    else:
        out_stage = stages[output]
        if out_stage is not None and (out_stage.step is None
                                      or out_stage.step.operator.role != "sink"):
            fail("the output stage must run a sink operator (an encoder)", output)

    if problems or order is None:
        return None
    return Pipeline(
        name=doc.pipeline,
        version=doc.version,
        path=path,
        stages=tuple(stages[n] for n in order),  # type: ignore[misc]
        output_stage=output,
        fingerprint=_fingerprint(doc, registry),
        description=doc.description,
    )


def _check_fixed_params(op: type[Operator], params: Mapping[str, Any], fail) -> None:
    """Fixed parameters must be known and well typed; required ones may come from callers.
    ``fail(problem, field)`` is called once per problem."""
    try:
        op.Params.model_validate(dict(params))
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] == "missing":
                continue
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                fail(f"operator '{op.name}' has no parameter '{loc}'", loc)
            else:
                fail(f"parameter '{loc}' of operator '{op.name}': {err['msg']}", loc)


def _topological(inputs_of: dict[str, set[str]], fail) -> list[str] | None:
    """The stage names, inputs first; ``None`` (after ``fail``) when they form a cycle."""
    waiting = {name: set(deps) for name, deps in inputs_of.items()}
    ordered: list[str] = []
    while waiting:
        ready = [n for n, deps in waiting.items() if not deps]
        if not ready:
            cycle = _find_cycle(waiting)
            fail(f"stages form a cycle: {' -> '.join(cycle)}", cycle[0], "inputs")
            return None
        for name in ready:
            ordered.append(name)
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
