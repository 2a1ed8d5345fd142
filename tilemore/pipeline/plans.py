"""A selector's look ahead: before its branches run, a selector that can judge the stage's
input (its operator's ``plan``) names the branches worth running; the others are skipped,
never run nor charged, and the selector chooses among the rest (:mod:`tilemore.pipeline.run`
asks, and follows the decisions kept here)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilemore.engine.backend import Backend
from tilemore.operator import Operator
from tilemore.pipeline.graph import TaskGraph, TaskNode

log = logging.getLogger("tilemore.run")


@dataclass(frozen=True)
class BranchPlan:
    """A selector's decision, before its branches ran, of which were worth running."""

    selector: str  # the selector task
    skipped: dict[str, str]  # branch task id → why it does not run
    reasons: dict[str, str]  # branch name → why it runs or not
    measures: dict[str, Any]  # what the selector measured of the input
    size: tuple[int, int] | None  # the stage input's (width, height): what skipping saved



class Plans:
    """Which branches each selector ruled out, and what the selectors are then told."""

    def __init__(self, graph: TaskGraph, skipped: dict[str, str],
                 done: Mapping[str, Any], can_plan: bool) -> None:
        self.graph, self.skipped = graph, skipped
        self.decisions: dict[str, BranchPlan] = {}
        self._undecided: dict[str, TaskNode] = {}  # branch task id → its selector
        for sel in graph.tasks:
            branches = graph.candidates(sel.id) if sel.operator.role == "selector" else []
            if not branches or not can_plan or not plans_ahead(sel.operator):
                continue
            # Decided already: a branch was ruled out, or everything has run.
            if any(b in skipped for b in branches) or all(b in done for b in branches):
                continue
            self._undecided.update((b, sel) for b in branches)

    def undecided_selector_of(self, task_id: str) -> TaskNode | None:
        return self._undecided.get(task_id)

    def branch_names(self, selector: TaskNode) -> list[str]:
        return [self.graph.task(c).branch or c for c in self.graph.candidates(selector.id)]

    def live(self, selector: str) -> list[str]:
        """The selector's candidates that run (or ran), in order: its verdict indexes these."""
        return [c for c in self.graph.candidates(selector) if c not in self.skipped]

    def params(self, task: TaskNode) -> Any:
        """A selector whose parameters have ``candidates`` is told the branches it gets."""
        if task.operator.role != "selector" or "candidates" not in type(task.params).model_fields:
            return task.params
        names = [self.graph.task(c).branch or c for c in self.live(task.id)]
        return task.params.model_copy(update={"candidates": names})

    def decide(self, selector: TaskNode, verdict: dict[str, Any] | None) -> BranchPlan:
        branches = self.graph.candidates(selector.id)
        names = self.branch_names(selector)
        verdict = verdict or {}
        run = set(verdict.get("run") or names)  # nothing worth running: run everything
        reasons = {str(k): str(v) for k, v in dict(verdict.get("reasons") or {}).items()}
        skipped = {b: reasons.get(n, "skipped by the selector")
                   for b, n in zip(branches, names, strict=True) if n not in run}
        self.skipped.update(skipped)
        for b in branches:
            self._undecided.pop(b, None)
        size = verdict.get("size")
        plan = BranchPlan(selector.id, skipped, reasons, dict(verdict.get("measures") or {}),
                          (int(size[0]), int(size[1])) if size else None)
        self.decisions[selector.id] = plan
        return plan


def plans_ahead(operator: type[Operator]) -> bool:
    """Whether the operator looks at its stage's input before the branches run."""
    return getattr(operator, "plan", None) is not getattr(Operator, "plan", None)


def plan_of(backend: Backend, handle: Any) -> dict[str, Any] | None:
    """The selector's plan; one that fails only costs the saving (every branch runs)."""
    try:
        verdict = backend.get(handle)
    except Exception as exc:  # noqa: BLE001 - planning is an optimisation
        log.warning("a selector's plan failed (%s: %s); every branch runs",
                    type(exc).__name__, exc)
        return None
    return verdict if isinstance(verdict, dict) else None
