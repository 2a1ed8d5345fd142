"""Where operators are found: the built-ins plus the modules a pipeline file names."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

from tilemore.errors import UnknownOperator
from tilemore.operator import Operator

BUILTIN_MODULES = (
    "tilemore_operators.decode",
    "tilemore_operators.denoise",
    "tilemore_operators.dncnn",
    "tilemore_operators.qc",
    "tilemore_operators.shifter",
    "tilemore_operators.encoder",
)


class OperatorRegistry:
    """A name → operator-class map. Every operator class a loaded module defines is added."""

    def __init__(self, operators: Iterable[type[Operator]] = ()) -> None:
        self._ops: dict[str, type[Operator]] = {}
        for op in operators:
            self.add(op)

    @classmethod
    def with_builtins(cls) -> OperatorRegistry:
        registry = cls()
        for name in BUILTIN_MODULES:
            registry.add_module(importlib.import_module(name))
        return registry

    def add(self, op: type[Operator]) -> None:
        name = getattr(op, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{op.__qualname__} must set a class attribute `name`")
        known = self._ops.get(name)
        if known is not None and known is not op:
            raise ValueError(
                f"operator '{name}' is defined twice: {_where(known)} and {_where(op)}"
            )
        self._ops[name] = op

    def add_module(self, module: ModuleType) -> list[type[Operator]]:
        """Add the operator classes *defined* in ``module`` (not those it imports)."""
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
    name = f"tilemore_user_ops.{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _where(op: type[Operator]) -> str:
    return f"{op.__module__}.{op.__qualname__}"
