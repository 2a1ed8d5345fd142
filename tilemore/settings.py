"""One typed settings object, read once from ``TILEMORE_*`` environment variables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tilemore import settings_sources as sources
from tilemore.settings_parts import (
    BlobSettings,
    DatabaseSettings,
    PaymentSettings,
    PreemptionSettings,
    RateLimitSettings,
    RetentionSettings,
    TracingSettings,
    WebhookSettings,
)

ENV_PREFIX = sources.ENV_PREFIX  # one prefix, where the variables are read


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
    dncnn_weights: Path | None = Field(
        None, description="the CNN denoiser's weights file (short for operator_settings "
        '{"dncnn": {"weights": …}})')
    operator_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each operator's own settings, by operator name: "
        "what its replicas see as context.options (JSON in the environment)")
    checkpoint_tasks: bool = Field(
        False, description="store finished tasks' outputs in the blob store (the service does)")
    checkpoint_policy: Literal["costly", "always"] = Field(
        "costly", description="which: costly, those whose run took longer than storing their "
        "output would (a cheap one runs again after a loss); always, every one")
    checkpoint_put_seconds: float = Field(
        0.002, ge=0, le=10, description="what storing an output costs at first, fixed part; "
        "each replica then learns it from its own puts")
    checkpoint_put_mb_per_second: float = Field(
        200, gt=0, le=100_000, description="likewise, raw megabytes stored per second")

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
    # Data lifecycle (docs/lifecycle.md): how long what a thread leaves is kept after it ended.
    retention_results_seconds: float = Field(
        7 * 86400, ge=60, description="a done thread's result is kept this long; then its "
        "link answers 410 result_expired")
    retention_inputs_seconds: float = Field(
        7 * 86400, ge=60, description="a thread's input image is kept this long after it ended")
    retention_records_seconds: float = Field(
        30 * 86400, ge=3600, description="a thread's record (its status, and its idempotency "
        "key) is kept this long after it ended; the same request then runs, and is charged, "
        "again. Never shorter than what the record's blobs are kept")
    retry_window_seconds: float = Field(
        7 * 86400, ge=0, description="a failed or canceled thread may be run again (POST "
        "/threads/{id}/retry) this long after it ended; its checkpoints are kept as long")
    retention_errors_seconds: float = Field(
        30 * 86400, ge=3600, description="indexed task errors (GET /errors) are kept this long")
    retention_webhooks_seconds: float = Field(
        30 * 86400, ge=86400, description="webhook deliveries (and their attempts) that were "
        "delivered or given up are kept this long after they were created, then the "
        "collector removes them; pending ones are never removed")
    retention_domains: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='per domain, overrides of the above: {"acme": '
        '{"results": 3600, "inputs": 3600, "records": 86400, "retry": 0, "errors": 86400, '
        '"webhooks": 86400}} '
        "(JSON in the environment)")
    blob_grace_seconds: float = Field(
        900, ge=0, description="an input or result blob written and not yet referenced is "
        "left alone this long (longer than an upload takes)")
    checkpoint_grace_seconds: float = Field(
        0, ge=0, description="likewise for checkpoints: 0 removes a done thread's checkpoints "
        "as it ends")
    gc_interval_seconds: float = Field(
        60, ge=1, le=86400, description="the collector's pause between passes")
    gc_batch: int = Field(1000, ge=1, le=10_000, description="rows one collector step takes")

    errors_log_path: Path | None = Field(
        None, description="append every failed task's error here too, one Elastic Common "
        "Schema JSON line each (for Filebeat or Elastic Agent); unset: the tilemore.errors.ecs "
        "logger only"
    )

    # Payments: credits enter through `tilemore admin add-credits` or a payment provider's
    # signed notification (POST /billing/payment-notifications, tilemore/billing/payments.py).
    payment_webhook_secret: SecretStr | None = Field(
        None, description="the secret payment notifications are signed with (HMAC-SHA256); "
        "several, comma-separated, while one is rotated; unset: the endpoint answers 404"
    )
    payment_webhook_tolerance_seconds: int = Field(
        300, ge=1, le=3600, description="how far a notification's signed timestamp may be "
        "from the service's clock"
    )

    # Webhooks (docs/api.md, Webhooks): signed deliveries of thread and billing events from a
    # durable outbox, sent by a deliverer beside every conductor.
    webhook_retry_seconds: float = Field(
        86400, ge=1, le=7 * 86400, description="a delivery is retried, with exponential "
        "backoff, this long after its event; then it is given up (the listing shows it)")
    webhook_backoff_seconds: float = Field(
        10.0, ge=0.01, le=3600, description="the pause after a delivery's first failed "
        "attempt; each later pause doubles (with jitter), up to webhook_backoff_max_seconds")
    webhook_backoff_max_seconds: float = Field(
        3600.0, ge=0.01, le=86400, description="the longest pause between two attempts")
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="one attempt's connect and answer, each at most this "
        "long; a receiver slower than that is a failed attempt")
    webhook_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="how often a deliverer looks for due deliveries")
    webhook_concurrency: int = Field(
        4, ge=1, le=64, description="deliveries one deliverer sends at once")
    webhook_max_endpoints: int = Field(
        16, ge=1, le=1000, description="endpoints one domain may register")
    webhook_secret_overlap_seconds: float = Field(
        86400, ge=0, le=30 * 86400, description="after a rotation, the previous signing "
        "secret still signs (a second v1) this long, unless the request says otherwise")
    webhook_allowed_networks: list[str] = Field(
        default_factory=list, description="networks (CIDR, comma-separated) webhooks may "
        "reach although they are private, loopback, link-local or reserved, e.g. "
        "127.0.0.0/8 for a receiver on the same machine; empty: public addresses only")

    # HTTP
    host: str = Field("127.0.0.1", description="the Serve proxy binds here; 0.0.0.0 exposes it")
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = Field(
        None, description="base of result links; required when host is not a loopback address "
        "(links are never taken from the request's Host header)")
    ingress_replicas: int = Field(1, ge=1, description="ingress replicas, when not autoscaled")
    conductor_concurrency: int = Field(64, ge=1, description="threads one conductor runs at once")
    conductors: int = Field(
        1, ge=1, le=64, description="conductors sharing the threads through leases; the first "
        "on the head node, the others on nodes with the `on_demand` resource (else the head)")
    max_conductors: int | None = Field(
        None, ge=1, le=64, description="with more than `conductors`, the first conductor "
        "starts more as the backlog grows (one per `conductor_concurrency` unfinished threads) "
        "and drains and stops them once it has stayed low for `conductor_downscale_seconds`")
    conductor_downscale_seconds: float = Field(
        60.0, ge=0, le=3600, description="how long the backlog must stay low before a "
        "conductor is drained and stopped")
    conductor_lease_seconds: float = Field(
        10.0, ge=1, le=600, description="a thread's lease: how long a dead conductor's threads "
        "wait before another takes them (renewed every third of it)")
    max_backlog: int = Field(
        100_000, ge=1, description="unfinished threads beyond which new submissions are "
        "refused with 503 backlog_full and Retry-After")

    # Shutdown
    shutdown_grace_seconds: float = Field(
        20.0, ge=2, le=600, description="SIGTERM or Ctrl-C: `tilemore serve` exits 0 within "
        "this long (Kubernetes kills at 30 s); threads in flight resume on the next start")

    # What one request may cost the ingress: sizes, pixels, time (see the README's Limits).
    max_envelope_bytes: int = Field(
        64 * 2**10, ge=1024, le=2**24, description="largest JSON envelope or billing body")
    max_meta_bytes: int = Field(
        4 * 2**10, ge=0, le=2**20, description="largest envelope `meta`, as compact JSON")
    max_output_pixels: int | None = Field(
        None, ge=1, description="largest image any task may make (default: max_input_pixels)")
    decode_pixel_budget: int | None = Field(
        None, ge=1, description="pixels one ingress replica decodes at once, across requests "
        "(default: max_input_pixels)")
    decode_wait_seconds: float = Field(
        2.0, ge=0, le=60, description="how long an upload waits for decode budget before a 503")
    upload_idle_seconds: float = Field(
        15.0, gt=0, le=600, description="longest pause between two chunks of a request body")
    upload_min_bytes_per_second: float = Field(
        16 * 2**10, ge=0, description="slowest accepted upload, on average after the grace")
    upload_grace_seconds: float = Field(
        10.0, ge=0, le=600, description="an upload's first seconds, before its rate is judged")
    token_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="how long an ingress replica trusts a token it looked "
        "up (a revoked token stops working within this)")
    auth_failure_burst: int = Field(
        10, ge=1, description="failed authentications one client may make in a row")
    auth_failure_per_second: float = Field(
        0.5, gt=0, description="…then this many a second; beyond, 429 with Retry-After")

    # Rate limits and thread quotas (docs/api.md): the defaults for every domain; `tilemore
    # admin set-limits` sets a domain's or a sub-account's own.
    rate_limiting: bool = Field(
        True, description="enforce rate limits and thread quotas; off only to measure what "
        "they cost")
    rate_limit_requests_per_second: float | None = Field(
        None, gt=0, le=1e6, description="requests a second a domain may make (all its tokens "
        "and sub-accounts together, across every ingress replica); unset: no limit")
    rate_limit_concurrent_threads: int | None = Field(
        None, ge=1, description="threads a domain may have running at once; unset: no limit")
    rate_limit_burst_seconds: float = Field(
        0.5, ge=0, le=60, description="a quiet subject may burst this many seconds' worth of "
        "requests at once (at least one)")
    rate_limit_sync_seconds: float = Field(
        0.5, gt=0, le=10, description="how often an ingress replica shares its demand with "
        "the others through the database and reads its share of each limit")
    rate_limit_on_error: Literal["open", "closed"] = Field(
        "open", description="when the shared rate-limit state cannot be read: open, each "
        "replica goes on limiting alone to the whole limit; closed, limited subjects get "
        "503 rate_limit_unavailable")
    sqlite_busy_seconds: float = Field(
        5.0, gt=0, le=60, description="how long a SQLite write waits for the file's lock "
        "before the request gets 503 database_busy")

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

    @model_validator(mode="after")
    def _links_named(self) -> Settings:
        # Result links must not come from the request (a forged Host would send the SDKs'
        # tokens elsewhere): exposed beyond loopback, the service must be told its address.
        if self.public_url is None and not _is_loopback(self.host):
            raise ValueError(f"TILEMORE_PUBLIC_URL must be set when the service listens on "
                             f"{self.host} (not a loopback address): it is the base of result "
                             "links, which are never taken from the request")
        return self

    @field_validator("ingress_max_replicas")
    @classmethod
    def _not_below_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < info.data.get("ingress_min_replicas", 1):
            raise ValueError("must be at least ingress_min_replicas")
        return value

    @field_validator("retention_domains")
    @classmethod
    def _retention_names(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for domain, ttl in value.items():
            unknown = set(ttl) - {"results", "inputs", "records", "retry", "errors", "webhooks"}
            if unknown:
                raise ValueError(f"{domain}: unknown retention {sorted(unknown)[0]!r} (results, "
                                 "inputs, records, retry, errors, webhooks)")
            if any(not 0 <= v <= 10 * 365 * 86400 for v in ttl.values()):
                raise ValueError(f"{domain}: retention seconds must be 0 to ten years")
        return value

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        import ipaddress

        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(
            value, str) else value
        if not isinstance(items, list):
            return items
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except (TypeError, ValueError):
                raise ValueError(f"{item!r} is not a network, such as 127.0.0.0/8") from None
        return items

    @field_validator("operator_autoscaling", "operator_settings", "retention_domains",
                     mode="before")
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

    def operator_options(self, name: str) -> dict[str, Any]:
        """The settings operator ``name`` is given, and nothing else of these."""
        legacy = {"weights": str(self.dncnn_weights)} if (
            name == "dncnn" and self.dncnn_weights) else {}
        return {**legacy, **self.operator_settings.get(name, {})}

    @property
    def output_pixel_limit(self) -> int:
        return self.max_output_pixels or self.max_input_pixels

    @property
    def decode_budget(self) -> int:
        return self.decode_pixel_budget or self.max_input_pixels

    @property
    def database_path(self) -> Path:
        return self.database or self.data_dir / "tilemore.db"

    @property
    def blob_path(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    # Each consumer's part (tilemore/settings_parts.py): what it is handed instead of these.
    @property
    def db(self) -> DatabaseSettings:
        return DatabaseSettings.of(self)

    @property
    def blobs(self) -> BlobSettings:
        return BlobSettings.of(self)

    @property
    def retention(self) -> RetentionSettings:
        return RetentionSettings.of(self)

    @property
    def webhooks(self) -> WebhookSettings:
        return WebhookSettings.of(self)

    @property
    def rate_limits(self) -> RateLimitSettings:
        return RateLimitSettings.of(self)

    @property
    def payments(self) -> PaymentSettings:
        return PaymentSettings.of(self)

    @property
    def traces(self) -> TracingSettings:
        return TracingSettings.of(self)

    @property
    def preemption(self) -> PreemptionSettings:
        return PreemptionSettings.of(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from, by priority: the environment, a ``.env`` file
        (``TILEMORE_ENV_FILE``; by default ``.env`` in the working folder, when ``environ``
        is the process's own), and a secrets folder (``TILEMORE_SECRETS_DIR``: one file per
        setting, named as its variable, as Kubernetes mounts a Secret)."""
        try:
            return cls.model_validate(sources.raw_values(cls.model_fields, environ))
        except ValidationError as exc:
            raise sources.invalid_setting(exc) from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
