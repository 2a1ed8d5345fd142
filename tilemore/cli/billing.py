"""``tilemore billing``: balances, histories and sub-accounts, as tables.

Reads and writes the service's own store (TILEMORE_DATABASE_URL, or the SQLite file of
TILEMORE_DATA_DIR / TILEMORE_DATABASE), like ``tilemore admin``; the HTTP endpoints do the
same for remote callers. Credits are added by ``tilemore admin add-credits``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tilemore.billing.money import parse_amount
from tilemore.billing.service import Billing
from tilemore.cli.errors import CLIError
from tilemore.cli.format import credit_cells, credits, echo_json, json_option
from tilemore.cli.state import check_domain, cli_ledger, cli_store
from tilemore.settings import Settings


def _open() -> tuple[Billing, Any]:
    settings = Settings.from_env()
    return Billing(cli_ledger(settings)), cli_store(settings)


def _account(store, domain: str, sub: str | None) -> str:
    check_domain(store, domain)
    if sub is None:
        return domain
    if store.account(f"{domain}/{sub}") is None:
        raise CLIError(f"no sub-account '{sub}' in domain '{domain}'")
    return f"{domain}/{sub}"


domain_option = click.option("--domain", "-d", required=True, help="The domain.")
sub_option = click.option("--sub", help="A sub-account of the domain, by name.")


@click.group("billing")
def billing_cmd() -> None:
    """Credits: balances, histories and sub-accounts (add credits: tilemore admin
    add-credits)."""


@billing_cmd.command("balance")
@domain_option
@sub_option
@json_option
def balance(domain: str, sub: str | None, as_json: bool) -> None:
    """Balance, credits set aside for running work, and what is available."""
    billing, store = _open()
    b = billing.balance(_account(store, domain, sub)).to_dict()
    if as_json:
        return echo_json(b)
    b = credit_cells(b)
    table = Table(title=f"balance of {b.pop('account')}", title_justify="left")
    for key in b:
        table.add_column(key, justify="right")
    table.add_row(*b.values())
    Console().print(table)


@billing_cmd.command("history")
@domain_option
@sub_option
@json_option
def history(domain: str, sub: str | None, as_json: bool) -> None:
    """One row per day for the latest 31 days."""
    billing, store = _open()
    account = _account(store, domain, sub)
    rows = billing.history(account, datetime.now(UTC).date())
    if as_json:
        return echo_json(rows)
    table = Table(title=f"the latest 31 days of {account}", title_justify="left")
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "date" else "right")
    for row in rows:
        table.add_row(*credit_cells(row).values())
    Console().print(table)


@billing_cmd.command("operations")
@domain_option
@sub_option
@click.option("--date", "day", help="YYYY-MM-DD: today (default) or yesterday.")
@json_option
def operations(domain: str, sub: str | None, day: str | None, as_json: bool) -> None:
    """Every operation and its cost, for today or yesterday."""
    billing, store = _open()
    account = _account(store, domain, sub)
    today = datetime.now(UTC).date()
    try:
        when = date.fromisoformat(day) if day else today
    except ValueError:
        raise CLIError(f"--date '{day}' is not YYYY-MM-DD") from None
    rows = billing.operations(account, when, today)
    if as_json:
        return echo_json(rows)
    table = Table(title=f"operations of {account} on {when}", title_justify="left")
    for col in ("seq", "kind", "thread", "task", "operator", "MP", "amount", "balance after"):
        table.add_column(col, justify="right" if col in ("MP", "amount", "balance after")
                         else "left")
    for r in rows:
        table.add_row(str(r["seq"]), r["kind"], (r["thread_id"] or "")[:12], r["task_id"] or "",
                      r["operator"] or "", f"{r['megapixels']:.2f}" if r["megapixels"] else "",
                      credits(r["amount"]), credits(r["balance_after"]))
    Console().print(table)


@billing_cmd.group("subaccounts")
def subaccounts() -> None:
    """A domain's customers: list, create, pay (from the domain's credits)."""


@subaccounts.command("list")
@domain_option
@json_option
def list_subaccounts(domain: str, as_json: bool) -> None:
    billing, store = _open()
    _account(store, domain, None)
    if as_json:
        return echo_json([{"name": a.name, **billing.balance(a.id).to_dict()}
                          for a in store.subaccounts(domain)])
    table = Table(title=f"sub-accounts of {domain}", title_justify="left")
    for col in ("name", "balance", "held", "available"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for a in store.subaccounts(domain):
        b = billing.balance(a.id).to_dict()
        b = credit_cells(b)
        table.add_row(a.name, b["balance"], b["held"], b["available"])
    Console().print(table)


@subaccounts.command("create")
@domain_option
@click.argument("name")
def create_subaccount(domain: str, name: str) -> None:
    from tilemore.api.envelope import META_PART
    _, store = _open()
    _account(store, domain, None)
    if not META_PART.match(name):
        raise CLIError(f"sub-account '{name}': use letters, digits and . _ ~ -")
    info, created = store.create_subaccount(domain, name)
    click.echo(f"sub-account {info.id} {'created' if created else 'already exists'}")


@subaccounts.command("pay")
@domain_option
@click.argument("name")
@click.option("--payment-id", required=True, help="The payment's id (idempotent).")
@click.option("--amount", required=True)
def pay(domain: str, name: str, payment_id: str, amount: str) -> None:
    """Record a payment a customer made: it moves that much from the domain's available
    credits to the sub-account."""
    billing, store = _open()
    account = _account(store, domain, name)
    out = billing.payment(domain, account, payment_id, parse_amount(amount))
    billing.close()
    click.echo(f"payment {payment_id}: {out['amount']} from {domain} to {account}"
               f"{' (already recorded)' if out['replayed'] else ''}; balance {out['balance']}")
