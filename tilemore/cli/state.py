"""The service's store, ledger and error index as one CLI command uses them: opened from the
settings, closed when the command ends (a PostgreSQL pool must not outlive it)."""

from __future__ import annotations

from typing import Any

import click

from tilemore.billing.ledger import Ledger, open_ledger
from tilemore.settings import Settings
from tilemore.store import ErrorIndex, open_store
from tilemore.store.errors import open_error_index


def cli_store(settings: Settings | None = None) -> Any:
    return click.get_current_context().with_resource(
        open_store(settings or Settings.from_env()))


def cli_ledger(settings: Settings | None = None) -> Ledger:
    return click.get_current_context().with_resource(
        open_ledger(settings or Settings.from_env()))


def cli_error_index(settings: Settings | None = None) -> ErrorIndex:
    return click.get_current_context().with_resource(
        open_error_index(settings or Settings.from_env()))
