"""``tilemore serve``: the whole service on this machine, on embedded defaults.

Local Ray, Ray Serve with the ingress, the conductor, SQLite and local blobs under
TILEMORE_DATA_DIR. On first run it creates the ``demo`` domain and a token, and it prints a
curl example that works when pasted. SIGTERM or Ctrl-C stops it in order within
TILEMORE_SHUTDOWN_GRACE_SECONDS (see :mod:`tilemore.cli.graceful`).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from decimal import Decimal
from pathlib import Path

import click

from tilemore.catalog import Catalog
from tilemore.cli.graceful import GracefulStop
from tilemore.settings import Settings
from tilemore.store import open_store

DEMO_DOMAIN = "demo"
DEMO_CREDITS = Decimal("100")
EXAMPLE_IMAGE = Path("examples/noisy-coffee.jpg")
EXAMPLE_ENVELOPE = ('{"output_format": "jpeg", "adjustments": {"master": {"algorithm": '
                    '"denoised-multiformat"}, "shifter": {"resize": {"width": 1024}}}}')


@click.command("serve")
@click.option("--host", help="Bind the HTTP port here (default 127.0.0.1; 0.0.0.0 exposes it).")
@click.option("--port", type=int, help="HTTP port (default 8000).")
def serve_cmd(host: str | None, port: int | None) -> None:
    """Run the service: HTTP API on Ray Serve, conductor, embedded stores."""
    settings = Settings.from_env()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update={**updates, "data_dir": settings.data_dir.resolve()})
    catalog = Catalog.load(settings)  # a broken pipeline file stops us here, not in a replica
    token = demo_token(settings)

    from tilemore.assembly import ray_cpus, serve_on_ray  # the service: only when served
    from tilemore.engine.ray_backend import ensure_ray

    # A slow or busy machine can take longer than Serve's default 5 s to ready its proxy.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    # Room for every operator replica, plus the ingress replicas and Serve's own actors.
    ensure_ray(settings.model_copy(update={"ray_num_cpus": ray_cpus(settings, catalog)}),
               quiet=True, dashboard=settings.metrics)  # metrics: Prometheus finds Ray's
    # After ray.init, which installs Ray's own SIGTERM handlers (a native stack dump, then
    # exit 1): ours replace them. A signal from here on lets Serve come up, then stops it.
    stop = GracefulStop(settings.shutdown_grace_seconds, echo=click.echo,
                        last_words=lambda: click.echo(in_flight(settings)))
    stop.install()
    serve_on_ray(settings)
    import ray

    click.echo(banner(settings, token, ray.get_runtime_context().gcs_address))
    stop.wait()
    shut_down(settings, stop)


RAY_STOP_S = 3.0  # kept from the grace for ray.shutdown (about 1 s here)


def shut_down(settings: Settings, stop: GracefulStop) -> None:
    """HTTP intake first, then the conductor, then Ray: each bounded by what is left of the
    grace; past it, the watchdog exits 0 and says what is left (see GracefulStop)."""
    from tilemore.engine.ray_shutdown import (
        begin_serve_shutdown,
        disconnect,
        kill_actor,
        serve_stopped,
    )
    from tilemore_deployments.conductor import NAMESPACE, running_conductors

    assert stop.signal is not None and stop.started_at is not None
    click.echo(f"{stop.signal.name}: stopping (at most {stop.grace:g} s)…")
    begin_serve_shutdown(timeout=stop.remaining(RAY_STOP_S))  # its proxies go at once
    if settings.ray_address is None:
        # Our own cluster ends with us: stop its conductor where it is, as a crash would.
        # Its threads are in the registry and resume on the next start.
        for name in running_conductors():
            kill_actor(name, NAMESPACE, timeout=min(5.0, stop.remaining(RAY_STOP_S)))
        click.echo(in_flight(settings))
    else:
        click.echo("the conductor goes on running threads on the cluster")
    if not serve_stopped(stop.remaining(RAY_STOP_S)):  # ingress requests finish meanwhile
        click.echo("Serve did not stop in time: exiting now")
        stop.abandon()  # the watchdog says what is left, ends our processes and exits 0
    disconnect()
    click.echo(f"stopped in {time.monotonic() - stop.started_at:.1f} s")
    stop.done()
    # Ray's native teardown at interpreter exit takes another 2-3 s here with nothing left
    # to stop (ray.shutdown has run), and is where a native abort would come from: skip it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def in_flight(settings: Settings, shown: int = 10) -> str:
    """What the registry holds as still 'processing': the next start resumes it."""
    with open_store(settings.db) as store:
        ids = store.unfinished_threads()
    if not ids:
        return "no thread in flight"
    listed = ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown
                                       else "")
    return f"{len(ids)} thread(s) in flight resume on the next start: {listed}"


def demo_token(settings: Settings) -> str:
    """The demo domain's token: made on first run, kept in the data folder (0600) so later
    runs can print it again (the store itself keeps only its hash)."""
    path = settings.data_dir / "demo-token"
    with open_store(settings.db) as store:
        if store.domain_exists(DEMO_DOMAIN) and path.exists():
            return path.read_text().strip()
    from tilemore.assembly import open_domain

    # Demo credits, so the example runs (ordered once: the order id makes it idempotent).
    secret = open_domain(settings, DEMO_DOMAIN, DEMO_CREDITS, reference="demo-credits")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def banner(settings: Settings, token: str, ray_address: str) -> str:
    url = settings.base_url
    auth = f"Authorization: Token {token} Domain {DEMO_DOMAIN}"
    image = EXAMPLE_IMAGE if EXAMPLE_IMAGE.exists() else Path("photo.jpg")
    return "\n".join([
        f"Tilemore is serving on {url}  (API docs: {url}/docs; data in {settings.data_dir})",
        f"demo domain: {DEMO_DOMAIN}   token: {token}   Ray: {ray_address}",
        "",
        "Submit an image (multipart: the envelope part, then the image part):",
        f"  IMG={shlex.quote(str(image))}",
        f"  curl -s -X POST \"{url}/shop/v1/submitted/$(sha256sum \"$IMG\" | cut -c1-64)/\" \\",
        f"    -H {shlex.quote(auth)} \\",
        f"    -F {shlex.quote('envelope=' + EXAMPLE_ENVELOPE + ';type=application/json')} \\",
        "    -F \"image=@$IMG\"",
        "Then wait for the thread (answered when it ends, within 60 s), and fetch the result "
        "from the link in its answer:",
        f"  curl -s -H {shlex.quote(auth)} '{url}/threads/THREAD_ID?wait=60'",
        f"  curl -s -H {shlex.quote(auth)} -o result.jpg {url}/results/THREAD_ID/result.jpg",
        "",
        f"Ctrl-C stops the service (SIGTERM too, within {settings.shutdown_grace_seconds:g} s); "
        "threads still running resume on the next start.",
    ])
