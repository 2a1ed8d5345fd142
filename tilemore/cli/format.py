"""How the CLI shows values in tables. JSON output keeps the stored forms (credits as their
full 20-digit strings); only tables are shortened."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import click

_CREDIT_STRING = re.compile(r"^-?\d+\.\d{20}$")  # how the ledger writes an amount


def credits(value: Decimal | str | int | None) -> str:
    """Credits without trailing zeros: ``12.5``, not ``12.50000000000000000000``; ``0``, not
    ``0E-20``. ``None`` is shown as an empty cell."""
    if value is None:
        return ""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if amount.is_zero():
        return "0"
    return f"{amount.normalize():f}"


def credit_cells(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with every ledger amount (a string of 20 fractional digits) shortened."""
    return {k: credits(v) if isinstance(v, str) and _CREDIT_STRING.match(v) else v
            for k, v in row.items()}


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (Decimals and dates as strings)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON instead of a table.")
