"""Phase 3: turn a pipeline plus a caller's adjustments into a graph of concrete tasks.

Adjustments are checked here, before anything runs: unknown stage, unknown algorithm,
unknown parameter and ill-typed parameter each raise an error that names the culprit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from tilemore.errors import (
    AdjustmentError,
    InvalidParameter,
    UnknownAlgorithm,
    UnknownParameter,
    UnknownStage,
    UnsupportedOutputFormat,
)
from tilemore.operator import Operator, OperatorParams
from tilemore.pipeline.validate import Algorithm, Pipeline, Stage, Step
from tilemore.retry import RetryPolicy


@dataclass(frozen=True)
class Source:
    """The bytes submitted to the pipeline."""


@dataclass(frozen=True)
class FromTask:
    task: str


@dataclass(frozen=True)
class Picked:
    """Whichever candidate task the selector task picks."""

    selector: str
    candidates: tuple[str, ...]


Input = Source | FromTask | Picked


@dataclass(frozen=True)
class TaskNode:
    id: str
    stage: str
    operator: type[Operator]
    params: OperatorParams
    inputs: tuple[Input, ...]
    branch: str | None = None
    retry_override: RetryPolicy | None = None

    @property
    def retry(self) -> RetryPolicy:
        return self.retry_override or self.operator.retry

    def depends_on(self) -> set[str]:
        deps: set[str] = set()
        for inp in self.inputs:
            if isinstance(inp, FromTask):
                deps.add(inp.task)
            elif isinstance(inp, Picked):
                deps.add(inp.selector)
                deps.update(inp.candidates)
        return deps


@dataclass(frozen=True)
class TaskGraph:
    pipeline: Pipeline
    tasks: tuple[TaskNode, ...]  # in an order where every task follows its inputs
    output: str
    algorithms: Mapping[str, str]  # stage → chosen algorithm or operator

    def task(self, task_id: str) -> TaskNode:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def candidates(self, selector: str) -> list[str]:
        """The branch tasks a selector chooses among, in the order it receives them."""
        stage = self.task(selector).stage
        return [i.task for i in self.task(selector).inputs
                if isinstance(i, FromTask) and self.task(i.task).stage == stage]

    def sizes(self, width: int, height: int) -> dict[str, tuple[tuple[int, int],
                                                               tuple[int, int]]]:
        """Each task's (input size, output size) on a ``width``×``height`` input, followed
        through the operators without running them: what pricing and the output limit use."""
        out: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        for task in self.tasks:
            deps = [out[d][1] for d in task.depends_on() if d in out]
            size_in = max(deps, key=lambda s: s[0] * s[1]) if deps else (width, height)
            out[task.id] = (size_in, task.operator.output_size(task.params, size_in))
        return out

    def critical_path(self, cost: Mapping[str, float]) -> float:
        """The longest chain of ``cost`` through the graph (for overhead measurements)."""
        finish: dict[str, float] = {}
        for t in self.tasks:
            start = max((finish[d] for d in t.depends_on()), default=0.0)
            finish[t.id] = start + cost.get(t.id, 0.0)
        return max(finish.values(), default=0.0)


def build_graph(
    pipeline: Pipeline,
    adjustments: Mapping[str, Any] | None = None,
    output_format: str | None = None,
) -> TaskGraph:
    adjustments = dict(adjustments or {})
    for name, value in adjustments.items():
        if name not in pipeline.stage_names:
            raise UnknownStage(
                f"adjustments.{name}: unknown stage (stages: {', '.join(pipeline.stage_names)})"
            )
        if not isinstance(value, Mapping):
            raise AdjustmentError(f"adjustments.{name}: must be an object")

    tasks: list[TaskNode] = []
    outputs: dict[str, Input] = {}  # stage → what its consumers read
    chosen: dict[str, str] = {}
    for stage in pipeline.stages:
        given = dict(adjustments.get(stage.name, {}))
        if stage.name == pipeline.output_stage and output_format is not None:
            given = _with_output_format(stage, given, output_format)
        inputs = tuple(outputs[i] for i in stage.inputs) or (Source(),)
        if stage.step is not None:
            params = _params(stage.step, given, f"adjustments.{stage.name}")
            tasks.append(TaskNode(stage.name, stage.name, stage.step.operator, params, inputs,
                                  retry_override=stage.step.retry))
            outputs[stage.name] = FromTask(stage.name)
            continue
        choice_name = given.pop("algorithm", stage.default)
        choice = stage.choices.get(choice_name) if isinstance(choice_name, str) else None
        if choice is None:
            raise UnknownAlgorithm(
                f"adjustments.{stage.name}.algorithm: unknown algorithm '{choice_name}' "
                f"(choices: {', '.join(stage.choices)})"
            )
        chosen[stage.name] = choice_name
        if isinstance(choice, Step):
            params = _params(choice, given, f"adjustments.{stage.name}")
            tasks.append(TaskNode(stage.name, stage.name, choice.operator, params, inputs,
                                  retry_override=choice.retry))
            outputs[stage.name] = FromTask(stage.name)
        else:
            new = _algorithm_tasks(stage, choice, given, inputs)
            tasks.extend(new)
            selector = new[-1]
            outputs[stage.name] = Picked(selector.id, tuple(t.id for t in new[:-1]))

    tasks = _with_size_hints(tasks)
    out = outputs[pipeline.output_stage]
    assert isinstance(out, FromTask)
    return TaskGraph(pipeline, tuple(tasks), out.task, chosen)


def _algorithm_tasks(
    stage: Stage, algo: Algorithm, given: dict[str, Any], inputs: tuple[Input, ...]
) -> list[TaskNode]:
    """One task per branch, then the selector; shared parameters go to every step that has
    them, ``branches.<name>`` parameters to that branch only."""
    where = f"adjustments.{stage.name}"
    per_branch = given.pop("branches", {}) or {}
    if not isinstance(per_branch, Mapping):
        raise AdjustmentError(f"{where}.branches: must be an object")
    for b, value in per_branch.items():
        if not isinstance(value, Mapping):
            raise AdjustmentError(f"{where}.branches.{b}: must be an object")
        if b not in algo.branches:
            raise UnknownParameter(
                f"{where}.branches.{b}: '{algo.name}' has no branch '{b}' "
                f"(branches: {', '.join(algo.branches)})"
            )
    steps = [*algo.branches.values(), algo.select]
    for key in given:
        if not any(key in s.operator.Params.model_fields for s in steps):
            raise UnknownParameter(f"{where}.{key}: unknown parameter of '{algo.name}'")

    def shared(step: Step) -> dict[str, Any]:
        return {k: v for k, v in given.items() if k in step.operator.Params.model_fields}

    tasks = []
    for b, step in algo.branches.items():
        values = {**shared(step), **dict(per_branch.get(b, {}))}
        params = _params(step, values, f"{where}.branches.{b}")
        tasks.append(TaskNode(f"{stage.name}/{b}", stage.name, step.operator, params, inputs, b,
                              step.retry))
    candidates = tuple(FromTask(t.id) for t in tasks)
    params = _params(algo.select, shared(algo.select), where)
    tasks.append(TaskNode(f"{stage.name}/select", stage.name, algo.select.operator, params,
                          (*inputs, *candidates), retry_override=algo.select.retry))
    return tasks


def _params(step: Step, given: Mapping[str, Any], where: str) -> OperatorParams:
    try:
        return step.operator.Params.model_validate({**step.params, **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise UnknownParameter(
                f"{where}.{loc}: unknown parameter of operator '{step.operator.name}'"
            ) from None
        raise InvalidParameter(f"{where}.{loc}: {err['msg']}") from None


def _with_output_format(stage: Stage, given: dict[str, Any], output_format: str) -> dict:
    assert stage.step is not None
    field = stage.step.operator.Params.model_fields.get("format")
    if field is None:
        raise UnsupportedOutputFormat(f"stage '{stage.name}' does not take an output format")
    if "format" in given and given["format"] != output_format:
        raise AdjustmentError(
            f"adjustments.{stage.name}.format '{given['format']}' contradicts "
            f"output_format '{output_format}'"
        )
    try:
        stage.step.operator.Params.model_validate({**stage.step.params, "format": output_format})
    except ValidationError as exc:
        if any(e["loc"] == ("format",) for e in exc.errors()):
            raise UnsupportedOutputFormat(
                f"unsupported output format '{output_format}'"
            ) from None
    return {**given, "format": output_format}


def _with_size_hints(tasks: list[TaskNode]) -> list[TaskNode]:
    """Tell a source how small it may decode when its only consumer needs fewer pixels."""
    out = list(tasks)
    for i, task in enumerate(tasks):
        if task.operator.role != "source" or "size_hint" not in task.operator.Params.model_fields:
            continue
        consumers = [t for t in tasks if task.id in t.depends_on()]
        if len(consumers) != 1:
            continue
        hint = consumers[0].operator.input_size_hint(consumers[0].params)
        if hint is not None and task.params.size_hint is None:  # type: ignore[attr-defined]
            out[i] = replace(task, params=task.params.model_copy(update={"size_hint": hint}))
    return out
