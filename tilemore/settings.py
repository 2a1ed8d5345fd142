"""One typed settings object, read once from ``TILEMORE_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tilemore.errors import TilemoreError

ENV_PREFIX = "TILEMORE_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ray_address: str | None = Field(
        None, description="address of an existing Ray cluster; unset starts a local one"
    )
    ray_num_cpus: int | None = Field(
        None, ge=1, description="logical CPUs of the local cluster; unset: enough for one "
        "replica of every operator of the pipeline, and at least the machine's cores"
    )
    max_input_pixels: int = Field(
        250_000_000, ge=1, description="decode refuses images declaring more pixels than this"
    )
    max_input_bytes: int = Field(512 * 2**20, ge=1, description="largest accepted upload")
    pipeline_paths: list[Path] = Field(
        default_factory=list, description="extra pipeline files or folders (os.pathsep-separated)"
    )
    default_pipeline: str = "denoised"
    replicas: int = Field(1, ge=1, description="actor replicas per operator")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            values[name] = raw.split(os.pathsep) if name == "pipeline_paths" else raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            var = ENV_PREFIX + str(err["loc"][0]).upper()
            raise TilemoreError(f"{var}: {err['msg']}", code="invalid_setting") from None
