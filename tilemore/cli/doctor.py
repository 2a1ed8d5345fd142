"""``tilemore doctor``: is this installation ready? Ray, the database, the blob store, GPUs
and package versions, each with a line of advice. Fast by default: it starts no Ray cluster
and creates no database unless asked (``--ray``)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Literal

import click
from rich.console import Console
from rich.table import Table

from tilemore.cli.format import echo_json
from tilemore.cli.state import absolute, database_label
from tilemore.settings import Settings

Status = Literal["ok", "warn", "fail"]
KEY_PACKAGES = ("tilemore", "ray", "numpy", "pillow", "pydantic", "fastapi", "uvicorn",
                "click", "torch", "psycopg", "boto3")
# Tables the store creates when it is first opened; a file without them is not its database.
# (The ledger's own tables come when billing first opens it.)
CORE_TABLES = ("domains", "accounts", "tokens", "threads", "tasks")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    advice: str = ""


@click.command("doctor")
@click.option("--ray", "start_ray", is_flag=True,
              help="Also start a local Ray instance to prove it can (a few seconds).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def doctor_cmd(ctx: click.Context, start_ray: bool, as_json: bool) -> None:
    """Check Ray, the database, the blob store, GPUs and package versions; exit 1 when a
    check fails (warnings do not fail)."""
    settings = absolute(Settings.from_env())
    checks = run_checks(settings, start_ray=start_ray)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        echo_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        table = Table(title="tilemore doctor", title_justify="left")
        for col in ("check", "status", "detail", "advice"):
            table.add_column(col, overflow="fold")
        style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        for c in checks:
            table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.advice)
        Console().print(table)
        click.echo(f"{len(failed)} failed, "
                   f"{sum(c.status == 'warn' for c in checks)} warnings, "
                   f"{sum(c.status == 'ok' for c in checks)} ok")
    if failed:
        ctx.exit(1)


def run_checks(settings: Settings, *, start_ray: bool = False) -> list[Check]:
    steps: list[Callable[[], Check]] = [
        lambda: check_ray(start_ray), lambda: check_database(settings),
        lambda: check_blobs(settings), check_gpu, check_versions,
    ]
    out = []
    for step in steps:
        try:
            out.append(step())
        except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check
            out.append(Check(getattr(step, "__name__", "check"), "fail",
                             f"{type(exc).__name__}: {exc}", "run with --debug"))
    return out


def check_ray(start: bool) -> Check:
    try:
        import ray
    except ImportError as exc:
        return Check("ray", "fail", f"not importable: {exc}",
                     "pip install 'ray[default]' (the version pyproject.toml names)")
    version = f"ray {ray.__version__}"
    if not start:
        return Check("ray", "ok", f"{version} importable (not started)",
                     "tilemore doctor --ray starts a local instance to prove it can")
    if ray.is_initialized():
        return Check("ray", "ok", f"{version}, already running in this process")
    began = time.monotonic()
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:  # the cluster this installation is told to use
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:  # a fresh local instance, never another process's running one
            ray.init(address="local", num_cpus=1, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        ok = ray.get(ray.remote(lambda: 42).remote(), timeout=120) == 42
    except Exception as exc:  # noqa: BLE001
        return Check("ray", "fail", f"{version} did not start: {exc}",
                     "check free memory and /tmp space; RAY_ADDRESS must name a live cluster")
    finally:
        ray.shutdown()
    took = time.monotonic() - began
    where = f"connected to {address}" if address else "started locally"
    return Check("ray", "ok" if ok else "fail", f"{version} {where} and ran a task in "
                 f"{took:.1f} s")


def check_database(settings: Settings) -> Check:
    where = database_label(settings)
    if settings.database_url:
        return _check_postgres(settings, where)
    path = settings.database_path
    if not path.exists():
        return Check("database", "warn", f"{where}",
                     "none yet: `tilemore serve` or `tilemore admin create-domain` creates it; "
                     "if you expected one, set TILEMORE_DATA_DIR or TILEMORE_DATABASE")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Check("database", "fail", f"{where}: {exc}",
                     "the file is not a readable SQLite database: check TILEMORE_DATABASE")
    return _tables_check(where, tables)


def _check_postgres(settings: Settings, where: str) -> Check:
    try:
        import psycopg
    except ImportError as exc:
        return Check("database", "fail", f"{where}: {exc}", "pip install 'psycopg[binary]'")
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as db:
            tables = {r[0] for r in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()")}
    except psycopg.Error as exc:
        return Check("database", "fail", f"{where}: {str(exc).strip().splitlines()[0]}",
                     "check TILEMORE_DATABASE_URL, the server and its pg_hba.conf")
    return _tables_check(where, tables)


def _tables_check(where: str, tables: set[str]) -> Check:
    missing = [t for t in CORE_TABLES if t not in tables]
    if not tables:
        return Check("database", "warn", f"{where}: empty",
                     "the service creates its tables when it first opens it")
    if missing:
        return Check("database", "fail", f"{where}: tables missing: {', '.join(missing)}",
                     "not a Tilemore database (or a partial one): check the setting")
    ledger = "with" if "ledger" in tables else "no ledger yet,"
    return Check("database", "ok", f"{where}: schema present ({ledger} {len(tables)} tables)")


def check_blobs(settings: Settings) -> Check:
    if settings.blob_store == "s3":
        from tilemore.blobs import open_blob_store

        key = open_blob_store(settings.blobs).put(b"tilemore doctor\n")
        return Check("blob store", "ok", f"S3 {settings.s3_bucket}: wrote {key[:12]}…")
    folder = settings.blob_path
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the folder is made on first use: is its parent writable?
    if not probe.is_dir():
        return Check("blob store", "fail", f"{folder}: {probe} is not a folder",
                     "set TILEMORE_BLOB_DIR or TILEMORE_DATA_DIR to a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("blob store", "fail", f"{folder}: cannot write in {probe}: "
                     f"{exc.strerror or exc}", "give this user write access or move "
                     "TILEMORE_DATA_DIR")
    usage = os.statvfs(probe)
    free = usage.f_bavail * usage.f_frsize
    made = "" if folder.exists() else " (made on first use)"
    return Check("blob store", "ok" if free > 1 << 30 else "warn",
                 f"{folder}{made}: writable, {free / 2**30:.1f} GiB free",
                 "" if free > 1 << 30 else "under 1 GiB free: results and checkpoints "
                 "will fail with blob_store_full")


def check_gpu() -> Check:
    try:
        import torch
    except ImportError:
        return Check("gpu", "warn", "torch not installed",
                     "CNN operators (dncnn, deblock) need torch; the others run on CPU")
    if not torch.cuda.is_available():
        return Check("gpu", "warn", f"torch {torch.__version__}: no CUDA device",
                     "GPU operators fall back to CPU where they allow it (gpu_optional)")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Check("gpu", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}: "
                 + ", ".join(names))


def check_versions() -> Check:
    found, missing = [], []
    for name in KEY_PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    core_missing = [m for m in missing if m in ("tilemore", "ray", "numpy", "pillow",
                                                 "pydantic", "click")]
    status: Status = "fail" if core_missing else "ok"
    return Check("packages", status, ", ".join(found) + (
        f"; not installed: {', '.join(missing)}" if missing else ""),
        "pip install -e '.[test]'" if core_missing else "")
