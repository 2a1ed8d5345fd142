"""Phase 1: read a pipeline file (YAML or TOML) into its document model, checking only shape.

Names are not resolved here; :mod:`tilemore.pipeline.validate` does that against a registry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tilemore.errors import PipelineFileError
from tilemore.retry import RetryPolicy

_NAME = r"^[a-z][a-z0-9_-]*$"


@dataclass(frozen=True)
class Problem:
    """One problem of a pipeline file: where it is (file, stage, field) and what it is.
    ``message`` is what :class:`PipelineFileError` says after the file and stage."""

    path: str
    message: str
    stage: str | None = None
    field: str | None = None

    def error(self) -> PipelineFileError:
        return PipelineFileError(self.path, self.message, stage=self.stage)

    def __str__(self) -> str:
        return str(self.error())

    @property
    def text(self) -> str:
        """The message without the field it starts with (that is in ``field``)."""
        if self.field and self.message.startswith(f"{self.field}: "):
            return self.message[len(self.field) + 2:]
        return self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"file": self.path, "stage": self.stage, "field": self.field,
                "message": self.text}


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OperatorRef(_Doc):
    """One operator with the parameters the pipeline fixes for it (callers may override)."""

    operator: str
    params: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None  # overrides the operator's own


class AlgorithmDoc(_Doc):
    """Branches that run in parallel on the stage input, then a selector that keeps one."""

    description: str = ""
    branches: dict[str, OperatorRef] = Field(min_length=2)
    select: OperatorRef


class StageDoc(_Doc):
    name: str = Field(pattern=_NAME)
    description: str = ""
    operator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None  # for an operator stage: overrides the operator's own
    choices: list[str] = Field(default_factory=list, description="algorithms or operators")
    default: str | None = None
    inputs: list[str] | None = Field(
        None, description="stages feeding this one; default: the previous stage"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> StageDoc:
        if (self.operator is None) == (not self.choices):
            raise ValueError("a stage has either `operator` or `choices`, not both or neither")
        if self.choices and (self.params or self.retry):
            raise ValueError("`params` and `retry` belong to an operator stage; put them on "
                             "branches")
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"default '{self.default}' is not one of its choices")
        return self


class PipelineDoc(_Doc):
    pipeline: str = Field(pattern=_NAME)
    version: str = "1"
    description: str = ""
    operator_modules: list[str] = Field(default_factory=list)
    output_stage: str | None = None
    algorithms: dict[str, AlgorithmDoc] = Field(default_factory=dict)
    stages: list[StageDoc] = Field(min_length=1)


def load_document(path: Path) -> dict[str, Any]:
    """Read YAML (``.yaml``/``.yml``) or TOML (``.toml``) into plain data."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineFileError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise PipelineFileError(path, "a pipeline file ends in .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise PipelineFileError(path, f"not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineFileError(path, "the top level must be a mapping")
    return data


def parse_pipeline(path: Path | str) -> PipelineDoc:
    """Read one pipeline file; raise its first problem (see :func:`document_problems`)."""
    path = Path(path)
    data = load_document(path)
    try:
        return PipelineDoc.model_validate(data)
    except ValidationError as exc:
        raise document_problems(path, data, exc)[0].error() from None


def document_problems(path: Path, data: dict[str, Any], exc: ValidationError) -> list[Problem]:
    """Every shape problem pydantic found in ``data``, each naming the stage and the field."""
    out: list[Problem] = []
    for err in exc.errors():
        loc = list(err["loc"])
        stage = None
        if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
            stages = data.get("stages") or []
            raw = stages[loc[1]] if loc[1] < len(stages) else None
            stage = raw.get("name") if isinstance(raw, dict) else None
            stage = stage if isinstance(stage, str) and stage else f"#{loc[1] + 1}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")  # a model validator's own words
        message = f"{field}: {msg}" if field else msg
        out.append(Problem(str(path), message, stage, field or None))
    return out
