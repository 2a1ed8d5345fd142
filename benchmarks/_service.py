"""Start the Tilemore service in this process (local Ray + Serve) for the API benchmarks."""

from __future__ import annotations

import socket
import tempfile
from decimal import Decimal
from pathlib import Path

from tilemore.billing.ledger import Entry, open_ledger
from tilemore.catalog import Catalog
from tilemore.engine.ray_backend import ensure_ray, local_cpus
from tilemore.settings import Settings
from tilemore.store import open_store

BENCH_CREDITS = Decimal("1000000")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(port: int | None = None, extra_apps: dict | None = None,
                  **overrides: object) -> tuple[Settings, dict]:
    """(settings, auth headers) of a fresh service, on ``port`` or a free one (so that a run
    never meets another service on this machine); ``extra_apps`` maps a route prefix to
    another Serve application to run beside it (a baseline); ``overrides`` are further
    settings (a benchmark's own pipeline files)."""
    port = port or free_port()
    from ray import serve
    from tilemore_deployments.ingress import build_app

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="tilemore-bench-")), port=port,
                        **overrides)
    store = open_store(settings)
    store.create_domain("bench")
    _, token = store.issue_token("bench")
    with open_ledger(settings) as ledger:  # credits, or every submission is a 402
        ledger.append([Entry("bench", "order", BENCH_CREDITS, reference="bench-credits")])
    catalog = Catalog.load(settings)
    cpus = local_cpus(catalog.operators_in_use()) + 2
    ensure_ray(settings.model_copy(update={"ray_num_cpus": cpus}), quiet=True)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    serve.run(build_app(settings), name="tilemore", route_prefix="/")
    for prefix, app in (extra_apps or {}).items():
        serve.run(app, name=prefix.strip("/"), route_prefix=prefix)
    return settings, {"Authorization": f"Token {token} Domain bench"}
