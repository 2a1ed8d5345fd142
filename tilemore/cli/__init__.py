"""The ``tilemore`` command. Bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

import click

from tilemore.cli.admin import admin_cmd
from tilemore.cli.batch import batch_cmd
from tilemore.cli.billing import billing_cmd
from tilemore.cli.error_search import errors_cmd
from tilemore.cli.errors import CLIError, report
from tilemore.cli.listing import operators_cmd, pipelines_cmd
from tilemore.cli.run import run_cmd
from tilemore.cli.serve import serve_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tilemore")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
def cli(debug: bool) -> None:
    """Tilemore: run computer-vision pipelines on Ray."""


cli.add_command(run_cmd)
cli.add_command(operators_cmd)
cli.add_command(pipelines_cmd)
cli.add_command(serve_cmd)
cli.add_command(admin_cmd)
cli.add_command(billing_cmd)
cli.add_command(errors_cmd)
cli.add_command(batch_cmd)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="tilemore", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tilemore: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (CLIError, Exception) as exc:  # noqa: BLE001 - the one place errors become words
        return report(exc, debug="--debug" in (sys.argv[1:] if argv is None else argv))
    return 0
