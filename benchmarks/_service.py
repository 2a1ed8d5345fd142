"""Start the Tilemore service in this process (local Ray + Serve) for the API benchmarks."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

from tilemore.assembly import open_domain, ray_cpus, serve_on_ray
from tilemore.catalog import Catalog
from tilemore.engine.ray_backend import ensure_ray
from tilemore.ports import free_port
from tilemore.settings import Settings

BENCH_CREDITS = Decimal("1000000")


def start_service(port: int | None = None, extra_apps: dict | None = None,
                  **overrides: object) -> tuple[Settings, dict]:
    """(settings, auth headers) of a fresh service, on ``port`` or a free one (so that a run
    never meets another service on this machine); ``extra_apps`` maps a route prefix to
    another Serve application to run beside it (a baseline); ``overrides`` are further
    settings (a benchmark's own pipeline files)."""
    port = port or free_port()
    from ray import serve

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="tilemore-bench-")), port=port,
                        **overrides)
    # credits, or every submission is a 402
    token = open_domain(settings, "bench", BENCH_CREDITS, reference="bench-credits")
    cpus = ray_cpus(settings, Catalog.load(settings), spare=2)
    ensure_ray(settings.model_copy(update={"ray_num_cpus": cpus}), quiet=True)
    serve_on_ray(settings, access_log=False)
    for prefix, app in (extra_apps or {}).items():
        serve.run(app, name=prefix.strip("/"), route_prefix=prefix)
    return settings, {"Authorization": f"Token {token} Domain bench"}
