"""The ``tilemore`` command. Bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

import click

from tilemore.cli.admin import admin_cmd
from tilemore.cli.authoring import init_cmd, schema_cmd, validate_cmd
from tilemore.cli.batch import batch_cmd
from tilemore.cli.billing import billing_cmd
from tilemore.cli.doctor import doctor_cmd
from tilemore.cli.error_search import errors_cmd
from tilemore.cli.errors import CLIError, report
from tilemore.cli.listing import operators_cmd, pipelines_cmd
from tilemore.cli.run import run_cmd
from tilemore.cli.serve import serve_cmd
from tilemore.cli.state import take_announcement

DEBUG_FLAG = "--debug"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tilemore")
@click.option(DEBUG_FLAG, is_flag=True,
              help="Show tracebacks of unexpected errors (accepted anywhere on the line).")
def cli(debug: bool) -> None:
    """Tilemore: run computer-vision pipelines on Ray."""


for command in (run_cmd, operators_cmd, pipelines_cmd, validate_cmd, schema_cmd, init_cmd,
                doctor_cmd, serve_cmd, admin_cmd, billing_cmd, errors_cmd, batch_cmd):
    cli.add_command(command)


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` wherever it stands (before ``--``), and whether it was
    there: the error hint says "run again with --debug", and people add it at the end."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end]
    return [a for a in argv[:end] if a != DEBUG_FLAG] + argv[end:], debug


def main(argv: list[str] | None = None) -> int:
    args, debug = split_debug(list(sys.argv[1:] if argv is None else argv))
    take_announcement()  # nothing left from an earlier call in this process
    try:
        rv = cli.main(args=([DEBUG_FLAG] if debug else []) + args, prog_name="tilemore",
                      standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tilemore: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (CLIError, Exception) as exc:  # noqa: BLE001 - the one place errors become words
        return report(exc, debug=debug, where=take_announcement())
    where = take_announcement()
    if where is not None:
        click.echo(f"tilemore: {where}", err=True)
    return rv if isinstance(rv, int) else 0  # a command's ctx.exit(code)
