"""One typed settings object, read once from ``TILEMORE_*`` environment variables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tilemore.errors import TilemoreError

ENV_PREFIX = "TILEMORE_"


class Autoscaling(BaseModel):
    """Replica autoscaling, with Ray Serve's names and meaning: keep about
    ``target_ongoing_requests`` calls (running or queued) per replica, between ``min_replicas``
    and ``max_replicas``; act once the need has lasted ``upscale_delay_s`` (more) or
    ``downscale_delay_s`` (fewer), judged on the mean over ``look_back_period_s``.
    Defined here, not beside the policy, so Settings and operators can both hold one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    look_back_period_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


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
    tile_memory_bytes: int = Field(
        128 * 2**20, ge=2**20, description="memory one tile may use on CPU (GPU: free memory)"
    )
    dncnn_weights: Path | None = Field(None, description="the CNN denoiser's weights file")
    checkpoint_tasks: bool = Field(
        False, description="store every task's output in the blob store (the service does)"
    )

    # The service's embedded state: SQLite and blobs under data_dir unless configured.
    data_dir: Path = Field(Path("tilemore-data"), description="embedded state lives here")
    database: Path | None = Field(None, description="SQLite file (default: data_dir/tilemore.db)")
    database_url: str | None = Field(
        None, description="postgresql://user:password@host:port/database: threads, domains, "
        "tokens, the ledger and the error index in PostgreSQL instead of the SQLite file"
    )
    blob_store: Literal["local", "s3"] = "local"
    blob_dir: Path | None = Field(None, description="local blobs (default: data_dir/blobs)")
    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint URL")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    presign_seconds: int = Field(3600, ge=60, description="lifetime of result links on S3")
    errors_log_path: Path | None = Field(
        None, description="append every failed task's error here too, one Elastic Common "
        "Schema JSON line each (for Filebeat or Elastic Agent); unset: the tilemore.errors.ecs "
        "logger only"
    )

    # HTTP
    host: str = Field("127.0.0.1", description="the Serve proxy binds here; 0.0.0.0 exposes it")
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = Field(None, description="base of result links (default: host:port)")
    ingress_replicas: int = Field(1, ge=1, description="ingress replicas, when not autoscaled")
    conductor_concurrency: int = Field(16, ge=1, description="threads one conductor runs at once")

    # Autoscaling. The ingress is a Serve deployment: Serve scales it between min and max once
    # ingress_max_replicas is set. Operator pools scale the same way where an operator
    # declares `autoscaling`, or where operator_autoscaling names it ("*": every other one).
    ingress_min_replicas: int = Field(1, ge=1)
    ingress_max_replicas: int | None = Field(
        None, ge=1, description="autoscale the ingress up to this many replicas; unset: a "
        "fixed ingress_replicas"
    )
    ingress_target_ongoing_requests: float = Field(
        8.0, gt=0, description="requests in progress per ingress replica Serve aims at"
    )
    ingress_upscale_delay_s: float = Field(30.0, ge=0)
    ingress_downscale_delay_s: float = Field(600.0, ge=0)
    ingress_look_back_period_s: float = Field(30.0, gt=0)
    operator_autoscaling: dict[str, Autoscaling | None] = Field(
        default_factory=dict, description="per operator name (\"*\": every operator that "
        "declares none), its autoscaling; null turns it off. JSON in the environment"
    )

    # Spot and preemptible nodes
    preemption_provider: Literal["aws", "gcp", "azure"] | None = Field(
        None, description="watch this cloud's preemption notices on every node, and drain"
    )
    preemption_metadata_url: str | None = Field(
        None, description="the metadata service (default: the cloud's own); {node_id} is "
        "replaced by each node's Ray id"
    )
    preemption_poll_seconds: float = Field(2.0, gt=0, le=60)

    # Prometheus metrics (ray.util.metrics)
    metrics: bool = Field(
        True, description="record Prometheus metrics through Ray's metrics agent (names in "
        "the README); off only to measure what they cost"
    )

    # OpenTelemetry traces: one per thread, a span per task
    tracing: Literal["off", "console", "otlp"] = Field(
        "off", description="where the conductor sends its traces: nowhere, to stdout, or to "
        "an OTLP/HTTP collector at otlp_endpoint"
    )
    otlp_endpoint: str | None = Field(
        None, description="the collector's OTLP/HTTP traces URL, e.g. "
        "http://collector:4318/v1/traces (unset: OTEL_EXPORTER_OTLP_*, else localhost:4318)"
    )
    otlp_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds one export to the collector may take, "
        "retries included; spans wait in a bounded queue meanwhile, threads never do"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, url: str | None) -> str | None:
        # Refused at start-up rather than by the first request; the URL itself is not echoed
        # (it may hold a password).
        scheme = url.split("://", 1)[0].lower() if url and "://" in url else None
        if url and scheme not in ("postgresql", "postgres"):
            got = f"a {scheme}:// URL" if scheme else "not a URL"
            raise ValueError(f"must be a postgresql:// URL (PostgreSQL is the one database "
                             f"server Tilemore supports; unset, it uses SQLite), got {got}")
        return url

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # OTLP over HTTP only (no gRPC client is installed): refused at start-up, not by
        # the first export.
        if url and not url.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP), such as "
                             "http://collector:4318/v1/traces")
        return url

    @field_validator("ingress_max_replicas")
    @classmethod
    def _not_below_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < info.data.get("ingress_min_replicas", 1):
            raise ValueError("must be at least ingress_min_replicas")
        return value

    @field_validator("operator_autoscaling", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('must be JSON, such as {"*": {"max_replicas": 4}}') from None

    @property
    def ingress_autoscaling(self) -> Autoscaling | None:
        """The ingress's Serve autoscaling, or None for a fixed ``ingress_replicas``."""
        if self.ingress_max_replicas is None:
            return None
        return Autoscaling(
            min_replicas=self.ingress_min_replicas,
            max_replicas=self.ingress_max_replicas,
            target_ongoing_requests=self.ingress_target_ongoing_requests,
            upscale_delay_s=self.ingress_upscale_delay_s,
            downscale_delay_s=self.ingress_downscale_delay_s,
            look_back_period_s=self.ingress_look_back_period_s,
        )

    @property
    def database_path(self) -> Path:
        return self.database or self.data_dir / "tilemore.db"

    @property
    def blob_path(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

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
