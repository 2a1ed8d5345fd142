"""Where operators are found: the built-ins plus the modules a pipeline file names.

An operator is checked when it is added: its ``role`` must be one of the four and its
``process`` must take what that role is given (a wrong signature would otherwise fail only
when a task runs, on a worker). A module may declare the packages its operators need in a
module-level ``REQUIREMENTS`` list; :func:`runtime_env_for` makes it the Ray ``runtime_env``
of the operator's replicas.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from tilemore.errors import UnknownOperator
from tilemore.operator import Operator

_USER_PACKAGE = "tilemore_user_ops"  # where modules loaded from a path are registered

OPERATOR_GROUP = "tilemore.operators"  # entry points naming modules of operators


def operator_modules() -> list[ModuleType]:
    """The modules of the installed operators: every ``tilemore.operators`` entry point (the
    built-ins' are in pyproject.toml), so the core names no operator package."""
    found = sorted(entry_points(group=OPERATOR_GROUP), key=lambda ep: (ep.value, ep.name))
    if not found:
        raise UnknownOperator(f"no operators are installed (no '{OPERATOR_GROUP}' entry "
                              "points): install the project, e.g. pip install -e .")
    modules = [ep.load() for ep in found]
    for ep, module in zip(found, modules, strict=True):
        if not isinstance(module, ModuleType):
            raise TypeError(f"entry point {ep.name} = {ep.value} must name a module")
    return modules


class OperatorRegistry:
    """A name → operator-class map. Every operator class a loaded module defines is added."""

    def __init__(self, operators: Iterable[type[Operator]] = ()) -> None:
        self._ops: dict[str, type[Operator]] = {}
        for op in operators:
            self.add(op)

    @classmethod
    def with_builtins(cls) -> OperatorRegistry:
        registry = cls()
        for module in operator_modules():
            registry.add_module(module)
        return registry

    def add(self, op: type[Operator]) -> None:
        name = getattr(op, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{op.__qualname__} must set a class attribute `name`")
        check_operator(op)
        known = self._ops.get(name)
        if known is not None and known is not op:
            raise ValueError(
                f"operator '{name}' is defined twice: {_where(known)} and {_where(op)}"
            )
        self._ops[name] = op

    def add_module(self, module: ModuleType) -> list[type[Operator]]:
        """Add the operator classes *defined* in ``module`` (not those it imports)."""
        module_requirements(module)  # a malformed REQUIREMENTS fails at load, not on Ray
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, Operator)
            and obj is not Operator
            and obj.__module__ == module.__name__
            and "name" in vars(obj)
        ]
        for op in found:
            self.add(op)
        return found

    def load(self, ref: str, *, relative_to: Path | None = None) -> list[type[Operator]]:
        """Load a module named by a dotted name or by a ``.py`` path and add its operators."""
        return self.add_module(import_operator_module(ref, relative_to=relative_to))

    def get(self, name: str) -> type[Operator]:
        try:
            return self._ops[name]
        except KeyError:
            raise UnknownOperator(
                f"unknown operator '{name}' (known: {', '.join(sorted(self._ops))})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> Iterator[type[Operator]]:
        return iter(sorted(self._ops.values(), key=lambda op: op.name))

    def __len__(self) -> int:
        return len(self._ops)


def import_operator_module(ref: str, *, relative_to: Path | None = None) -> ModuleType:
    """Import ``package.module`` normally; import ``path/to/file.py`` under a stable name."""
    if not ref.endswith(".py"):
        return importlib.import_module(ref)
    path = Path(ref)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"operator module {ref} not found (looked at {path})")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"{_USER_PACKAGE}.{path.stem}_{digest}"
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)  # an edited file is imported again
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__tilemore_stamp__", None) == stamp:
        return known
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__tilemore_stamp__ = stamp  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _where(op: type[Operator]) -> str:
    """Where ``op`` is defined: its file for a module loaded by path (its module name is
    made up), else its dotted name."""
    module = sys.modules.get(op.__module__)
    file = getattr(module, "__file__", None)
    if op.__module__.startswith(f"{_USER_PACKAGE}.") and file:
        return f"{file}: class {op.__qualname__}"
    return f"{op.__module__}.{op.__qualname__}"


class OperatorDefinitionError(ValueError):
    """An operator class that cannot work as declared (found when its module is loaded)."""


# What ``process`` is given after ``params``, per role; ``True``: any number of candidates.
_PROCESS_INPUTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "source": (("data",), False),
    "transform": (("image",), False),
    "sink": (("image",), False),
    "selector": (("original",), True),
}


def expected_process(role: str) -> str:
    inputs, many = _PROCESS_INPUTS[role]
    return f"def process(self, params, {', '.join(inputs)}{', *candidates' if many else ''})"


def check_operator(op: type[Operator]) -> None:
    """Refuse an operator whose ``role`` is unknown or whose ``process`` cannot be called
    the way its role is called: ``process(params, input)``, or for a selector
    ``process(params, original, *candidates)``."""
    where = f"operator '{getattr(op, 'name', op.__qualname__)}' ({_where(op)})"
    if op.role not in _PROCESS_INPUTS:
        raise OperatorDefinitionError(
            f"{where}: role '{op.role}' is not one of {', '.join(_PROCESS_INPUTS)}")
    if op.process is Operator.process:
        raise OperatorDefinitionError(f"{where} defines no process; a {op.role} needs "
                                      f"`{expected_process(op.role)}`")
    try:
        sig = inspect.signature(op.process)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    inputs, many = _PROCESS_INPUTS[op.role]
    calls = [(None, None, *inputs)]
    if many:  # a selector is called with 2 or more candidates
        calls += [(None, None, *inputs, "c1", "c2"), (None, None, *inputs, "c1", "c2", "c3")]
    for args in calls:
        try:
            sig.bind(*args)
        except TypeError:
            raise OperatorDefinitionError(
                f"{where}: process{sig} cannot be called as a {op.role}'s is; write "
                f"`{expected_process(op.role)}`") from None


def module_requirements(module: ModuleType | None) -> list[str]:
    """The module's ``REQUIREMENTS`` (pip requirement strings), checked."""
    reqs = getattr(module, "REQUIREMENTS", None) if module is not None else None
    if reqs is None:
        return []
    name = getattr(module, "__name__", "?")
    if not isinstance(reqs, (list, tuple)) or not all(
            isinstance(r, str) and r.strip() for r in reqs):
        raise OperatorDefinitionError(
            f"module {name}: REQUIREMENTS must be a list of pip requirement strings, "
            f"like ['scikit-image>=0.22']")
    try:
        from packaging.requirements import InvalidRequirement, Requirement  # Ray's dependency
    except ImportError:  # pragma: no cover - pip checks them on the worker then
        return list(reqs)
    for r in reqs:
        try:
            Requirement(r)
        except InvalidRequirement as exc:
            raise OperatorDefinitionError(f"module {name}: REQUIREMENTS: {exc}") from None
    return list(reqs)


def runtime_env_for(op: type[Operator]) -> dict[str, Any] | None:
    """The Ray ``runtime_env`` of ``op``'s replicas: pip installs its module's
    ``REQUIREMENTS`` on the worker; ``None`` (the cluster's own environment) without any."""
    reqs = module_requirements(sys.modules.get(op.__module__))
    return {"pip": reqs} if reqs else None
