"""The service's store, ledger and error index as one CLI command uses them: opened from the
settings, closed when the command ends (a PostgreSQL pool must not outlive it).

The data folder and the paths under it are made absolute when the settings are read, and the
first use in a command says on stderr which database and data folder it is: ``admin`` run
from another folder would otherwise open (and create) a new, empty SQLite file silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from tilemore.billing.ledger import Ledger, open_ledger
from tilemore.cli.errors import CLIError
from tilemore.settings import Settings
from tilemore.store import ErrorIndex, open_store
from tilemore.store.error_index import open_error_index

_pending: str | None = None  # one command runs per process (or per main() call)


def absolute(settings: Settings) -> Settings:
    """``settings`` with ``data_dir``, ``database`` and ``blob_dir`` absolute (resolved
    against the current folder now, so that nothing later reads them elsewhere)."""
    update: dict[str, Path] = {"data_dir": settings.data_dir.expanduser().resolve()}
    for name in ("database", "blob_dir"):
        value = getattr(settings, name)
        if value is not None:
            update[name] = value.expanduser().resolve()
    return settings.model_copy(update=update)


def cli_settings() -> Settings:
    """The settings from the environment, with absolute paths."""
    return absolute(Settings.from_env())


def database_label(settings: Settings) -> str:
    """The database in words, without a password: the PostgreSQL URL's host and name, or
    the SQLite file."""
    if settings.database_url:
        parts = urlsplit(settings.database_url)
        host = parts.hostname or ""
        netloc = (f"{parts.username}@" if parts.username else "") + host + (
            f":{parts.port}" if parts.port else "")
        return "PostgreSQL " + urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    path = settings.database_path
    return f"SQLite {path}" + ("" if path.exists() else " (new: it does not exist yet)")


def announce(settings: Settings) -> None:
    """Note which database and data folder this command uses. :func:`tilemore.cli.main`
    prints it on stderr when the command ends, as its own line after a success and inside
    the one error line after a failure (a wrong database is a common cause of "no domain")."""
    global _pending
    if _pending is None:
        _pending = f"database {database_label(settings)}; data folder {settings.data_dir}"


def take_announcement() -> str | None:
    """The note of :func:`announce`, once; ``None`` when the command used no database."""
    global _pending
    line, _pending = _pending, None
    return line


def _opened(settings: Settings | None) -> Settings:
    settings = absolute(settings or Settings.from_env())
    announce(settings)
    return settings


def cli_store(settings: Settings | None = None) -> Any:
    return click.get_current_context().with_resource(open_store(_opened(settings).db))


def cli_ledger(settings: Settings | None = None) -> Ledger:
    return click.get_current_context().with_resource(open_ledger(_opened(settings).db))


def cli_error_index(settings: Settings | None = None) -> ErrorIndex:
    return click.get_current_context().with_resource(open_error_index(_opened(settings).db))


def check_domain(store: Any, domain: str) -> None:
    """Fail the command with "no domain 'DOMAIN'" unless ``store`` has that domain."""
    if not store.domain_exists(domain):
        raise CLIError(f"no domain '{domain}'")
