"""What each consumer of the settings is given: one small frozen model per consumer.

A store, the collector or the webhook deliverer needs three to ten of the hundred settings;
handed the whole ``Settings`` it would also hold the database URL (with its password) and the
payment secret. Each part is a projection of ``Settings``: its fields keep their names there
(``settings.db.database_url`` is ``TILEMORE_DATABASE_URL``), so docs/settings.md stays the one
reference, and ``Settings`` builds each part from values it has already validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, SecretStr


class SettingsPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, settings: Any) -> Self:
        """The part of ``settings`` (validated there already, so not again)."""
        return cls.model_construct(**{name: getattr(settings, name) for name in cls.model_fields})


class DatabaseSettings(SettingsPart):
    """The registry, the ledger, the error index and the lifecycle's tables."""

    database_path: Path
    database_url: str | None = None
    sqlite_busy_seconds: float = 5.0


class BlobSettings(SettingsPart):
    """The blob store: local files or an S3 bucket."""

    blob_store: Literal["local", "s3"] = "local"
    blob_path: Path
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    presign_seconds: int = 3600
    metrics: bool = True


class RetentionSettings(SettingsPart):
    """The data lifecycle: how long what a thread leaves is kept, and the collector's pace."""

    retention_results_seconds: float
    retention_inputs_seconds: float
    retention_records_seconds: float
    retry_window_seconds: float
    retention_errors_seconds: float
    retention_webhooks_seconds: float
    retention_domains: dict[str, dict[str, float]]
    blob_grace_seconds: float
    checkpoint_grace_seconds: float
    gc_interval_seconds: float
    gc_batch: int


class WebhookSettings(SettingsPart):
    """Webhook endpoints (the API) and their deliveries (the deliverer)."""

    base_url: str
    webhook_retry_seconds: float
    webhook_backoff_seconds: float
    webhook_backoff_max_seconds: float
    webhook_timeout_seconds: float
    webhook_poll_seconds: float
    webhook_concurrency: int
    webhook_max_endpoints: int
    webhook_secret_overlap_seconds: float
    webhook_allowed_networks: list[str]


class RateLimitSettings(SettingsPart):
    """Every domain's default rate limit and thread quota, and how replicas share them."""

    rate_limiting: bool = True
    rate_limit_requests_per_second: float | None = None
    rate_limit_concurrent_threads: int | None = None
    rate_limit_burst_seconds: float = 0.5
    rate_limit_sync_seconds: float = 0.5
    rate_limit_on_error: Literal["open", "closed"] = "open"


class PaymentSettings(SettingsPart):
    """Signed payment notifications: the one part that holds a secret."""

    payment_webhook_secret: SecretStr | None = None
    payment_webhook_tolerance_seconds: int = 300


class TracingSettings(SettingsPart):
    """Where the conductor's spans go."""

    tracing: Literal["off", "console", "otlp"] = "off"
    otlp_endpoint: str | None = None
    otlp_timeout: float = 10.0


class PreemptionSettings(SettingsPart):
    """Spot and preemptible nodes: whose notices to watch, and how often."""

    preemption_provider: Literal["aws", "gcp", "azure"] | None = None
    preemption_metadata_url: str | None = None
    preemption_poll_seconds: float = 2.0


PARTS: dict[str, type[SettingsPart]] = {
    "db": DatabaseSettings, "blobs": BlobSettings, "retention": RetentionSettings,
    "webhooks": WebhookSettings, "rate_limits": RateLimitSettings,
    "payments": PaymentSettings, "traces": TracingSettings, "preemption": PreemptionSettings,
}
