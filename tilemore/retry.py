"""When a failed task runs again: each operator declares a :class:`RetryPolicy`, and a
pipeline file may override it per stage or branch (``retry: {max_retries: 5}``).

Bad input and bad configuration (:class:`~tilemore.errors.TilemoreError`) never retry: the
same call would fail the same way. Everything else — a lost replica, a CUDA hiccup, a full
disk — retries by default, after an exponential backoff.
"""

from __future__ import annotations

import builtins
import importlib

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tilemore.errors import TilemoreError


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int = Field(2, ge=0, le=100, description="runs after the first failure")
    backoff_seconds: float = Field(0.2, ge=0, le=3600, description="wait before the 1st retry")
    backoff_factor: float = Field(2.0, ge=1, le=10, description="each further wait × this")
    backoff_max_seconds: float = Field(30.0, ge=0, le=3600)
    retry_on: tuple[str, ...] = Field(
        ("Exception",), description="exception classes that retry: builtin or dotted names")

    @field_validator("retry_on")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            exception_class(name)
        return names

    def retries(self, error: BaseException, failures: int) -> bool:
        """Whether a task that has now failed ``failures`` times, the last with ``error``,
        runs again."""
        if failures > self.max_retries or isinstance(error, TilemoreError):
            return False
        return isinstance(error, tuple(exception_class(n) for n in self.retry_on))

    def delay(self, failures: int) -> float:
        return min(self.backoff_max_seconds,
                   self.backoff_seconds * self.backoff_factor ** max(0, failures - 1))


def exception_class(name: str) -> type[BaseException]:
    """``MemoryError`` (a builtin) or ``package.module.SomeError``."""
    module, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module) if module else builtins, attr)
    except (ImportError, AttributeError):
        raise ValueError(f"unknown exception class '{name}'") from None
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(f"'{name}' is not an exception class")
    return found
