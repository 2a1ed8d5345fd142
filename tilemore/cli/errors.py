"""How the CLI turns any error into one line (and a traceback only when asked)."""

from __future__ import annotations

import json
import traceback

import click

from tilemore.errors import TilemoreError
from tilemore.pipeline.run import TaskFailed


class CLIError(Exception):
    """A problem with the command line itself (a missing file, unreadable JSON)."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, TaskFailed):
        inner = exc.error
        code = f" [{inner.code}]" if isinstance(inner, TilemoreError) else ""
        return f"{exc.task_id} ({exc.operator}){code}: {inner}"
    if isinstance(exc, TilemoreError):
        return f"[{exc.code}] {exc.message}"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    return str(exc) or type(exc).__name__


def report(exc: BaseException, *, debug: bool, where: str | None = None) -> int:
    """One line on stderr (``where``: the database the command used, in parentheses)."""
    click.echo(f"tilemore: {describe(exc)}" + (f" ({where})" if where else ""), err=True)
    unexpected = not isinstance(exc, (CLIError, TilemoreError, json.JSONDecodeError)) and not (
        isinstance(exc, TaskFailed) and exc.expected
    )
    if debug:
        click.echo(exc.traceback if isinstance(exc, TaskFailed) else traceback.format_exc(),
                   err=True)
    elif unexpected:
        click.echo("tilemore: (an unexpected error; run again with --debug for the traceback)",
                   err=True)
    return 1
