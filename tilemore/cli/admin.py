"""``tilemore admin``: domains and their tokens, prices, plans and credits, straight in the
service's store."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from tilemore.api.envelope import META_PART
from tilemore.cli.errors import CLIError
from tilemore.cli.format import echo_json, json_option
from tilemore.cli.lifecycle import COMMANDS as LIFECYCLE_COMMANDS
from tilemore.cli.state import check_domain, cli_ledger, cli_store
from tilemore.cli.webhooks import webhooks_cmd
from tilemore.errors import TilemoreError
from tilemore.settings import Settings
from tilemore.store import SCOPES, check_scopes


@click.group("admin")
def admin_cmd() -> None:
    """Manage domains and tokens (uses TILEMORE_DATABASE_URL, or the SQLite file of
    TILEMORE_DATA_DIR / TILEMORE_DATABASE)."""


@admin_cmd.command("create-domain")
@click.argument("name")
def create_domain(name: str) -> None:
    """Create a domain (a tenant)."""
    if not META_PART.match(name):
        raise CLIError(f"domain '{name}': use letters, digits and . _ ~ - (at most 128)")
    created = cli_store().create_domain(name)
    click.echo(f"domain {name} {'created' if created else 'already exists'}")


@admin_cmd.command("issue-token")
@click.argument("domain")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE",
              help=f"What the token may do: {', '.join(SCOPES)} (repeat; default: all).")
def issue_token(domain: str, scopes: tuple[str, ...]) -> None:
    """Issue a token for DOMAIN; the token is shown once."""
    store = cli_store()
    if not store.domain_exists(domain):
        raise CLIError(f"no domain '{domain}' (create it with: tilemore admin create-domain)")
    try:
        wanted = check_scopes(list(scopes)) if scopes else SCOPES
    except TilemoreError as exc:
        raise CLIError(exc.message) from None
    token_id, secret = store.issue_token(domain, scopes=wanted)
    click.echo(f"token id: {token_id}\ntoken:    {secret}\nscopes:   {' '.join(wanted)}\n"
               f"header:   Authorization: Bearer {secret}")


@admin_cmd.command("revoke-token")
@click.argument("token_id")
def revoke_token(token_id: str) -> None:
    """Revoke a token by its id (tok_…)."""
    if not cli_store().revoke_token(token_id):
        raise CLIError(f"no active token '{token_id}'")
    click.echo(f"token {token_id} revoked")


@admin_cmd.command("tokens")
@click.argument("domain")
@json_option
def list_tokens(domain: str, as_json: bool) -> None:
    """List DOMAIN's tokens (ids only; secrets are never stored)."""
    store = cli_store()
    check_domain(store, domain)
    from tilemore.api.views import iso
    if as_json:
        echo_json([{"id": t.id, "account": t.account, "scopes": list(t.scopes),
                    "created": iso(t.created_at), "revoked": iso(t.revoked_at)}
                   for t in store.list_tokens(domain)])
        return
    table = Table(title=f"tokens of {domain}", title_justify="left")
    for col in ("id", "account", "scopes", "created", "revoked"):
        table.add_column(col)
    for t in store.list_tokens(domain):
        table.add_row(t.id, t.account, " ".join(t.scopes), iso(t.created_at),
                      iso(t.revoked_at) or "")
    Console().print(table)


@admin_cmd.command("verify-ledger")
def verify_ledger() -> None:
    """Recompute the ledger's hash chain, balances and daily totals; exit 1 on any mismatch."""
    report = cli_ledger().verify()
    if not report.ok:
        raise CLIError(f"the ledger does not verify ({len(report.problems)} problems): "
                       + "; ".join(report.problems[:5]))
    click.echo(f"ledger ok: {report.entries:,} entries, chain, balances and daily totals intact")


@admin_cmd.command("set-price")
@click.argument("operator")
@click.option("--per-call", required=True)
@click.option("--per-megapixel", required=True)
def set_price(operator: str, per_call: str, per_megapixel: str) -> None:
    """Set OPERATOR's price (credits per call and per input megapixel)."""
    from tilemore.billing.money import parse_amount
    from tilemore.catalog import Catalog

    settings = Settings.from_env()
    if operator not in Catalog.load(settings).registry:
        raise CLIError(f"no operator '{operator}' (see: tilemore operators)")
    call = parse_amount(per_call, positive=False, field="--per-call")
    mp = parse_amount(per_megapixel, positive=False, field="--per-megapixel")
    if call < 0 or mp < 0:
        raise CLIError("a price cannot be negative")
    cli_ledger(settings).set_price(operator, call, mp)
    click.echo(f"{operator}: {per_call} per call + {per_megapixel} per megapixel")


@admin_cmd.command("set-plan")
@click.argument("domain")
@click.option("--bonus-percent", required=True, help="Bonus on ordered credits, e.g. 10.")
@click.option("--commitment", default="", help="What the domain committed to, in words.")
def set_plan(domain: str, bonus_percent: str, commitment: str) -> None:
    """Set DOMAIN's plan: the commitment bonus applied to its credit orders."""
    from tilemore.billing.money import parse_amount

    settings = Settings.from_env()
    check_domain(cli_store(settings), domain)
    percent = parse_amount(bonus_percent, positive=False, field="--bonus-percent")
    if percent < 0:
        raise CLIError("--bonus-percent cannot be negative")
    cli_ledger(settings).set_plan(domain, percent, commitment)
    click.echo(f"{domain}: {bonus_percent} % bonus on orders ({commitment or 'no commitment'})")


@admin_cmd.command("add-credits")
@click.argument("domain")
@click.option("--order-id", required=True, help="The order or invoice id (idempotent).")
@click.option("--amount", required=True, help="Credits, e.g. 100 or 12.5.")
def add_credits(domain: str, order_id: str, amount: str) -> None:
    """Add credits DOMAIN bought, plus its plan's commitment bonus. The same order id again
    adds nothing; with another amount it is refused."""
    from tilemore.billing.money import parse_amount
    from tilemore.billing.service import Billing

    settings = Settings.from_env()
    check_domain(cli_store(settings), domain)
    if not 1 <= len(order_id) <= 200:
        raise CLIError("--order-id: 1 to 200 characters")
    billing = Billing(cli_ledger(settings))
    try:
        out = billing.order(domain, order_id, parse_amount(amount, field="--amount"))
    finally:
        billing.close()
    click.echo(f"order {order_id}: {out['amount']} + bonus {out['applied_commitment_bonus']}"
               f"{' (already recorded)' if out['replayed'] else ''}; balance {out['balance']}")


for _command in LIFECYCLE_COMMANDS:  # gc, usage, delete-domain-data (docs/lifecycle.md)
    admin_cmd.add_command(_command)
admin_cmd.add_command(webhooks_cmd)  # endpoints and their deliveries (docs/api.md)


def _limit_value(text: str | None, what: str, kind: type) -> tuple[bool, float | int | None]:
    """(given, value): a number, ``off`` (0: no limit) or ``default`` (None)."""
    if text is None:
        return False, None
    if text == "default":
        return True, None
    if text == "off":
        return True, 0
    try:
        value = kind(text)
    except ValueError:
        raise CLIError(f"{what}: a number, 'off' or 'default', got '{text[:40]}'") from None
    if not 0 < value <= 1e6:
        raise CLIError(f"{what}: more than 0 and at most 1,000,000 (or 'off')")
    return True, value


@admin_cmd.command("set-limits")
@click.argument("domain")
@click.option("--account", default=None, help="A sub-account's name: its own limits.")
@click.option("--requests-per-second", "rps", default=None,
              help="Requests a second (all replicas together), 'off' or 'default'.")
@click.option("--concurrent-threads", "threads", default=None,
              help="Threads running at once, 'off' or 'default'.")
def set_limits(domain: str, account: str | None, rps: str | None, threads: str | None) -> None:
    """Set DOMAIN's rate limit and thread quota (or a sub-account's, with --account).
    Ingress replicas apply it within TILEMORE_RATE_LIMIT_SYNC_SECONDS."""
    from tilemore.store.limits import Limit

    store = cli_store()
    check_domain(store, domain)
    subject = domain if account is None else f"{domain}/{account}"
    if account is not None and store.account(subject) is None:
        raise CLIError(f"no sub-account '{account}' in domain '{domain}'")
    gave_rps, new_rps = _limit_value(rps, "--requests-per-second", float)
    gave_threads, new_threads = _limit_value(threads, "--concurrent-threads", int)
    if not gave_rps and not gave_threads:
        raise CLIError("give --requests-per-second, --concurrent-threads or both")
    old = store.rate_limits().get(subject, Limit())
    store.set_rate_limit(subject, Limit(
        new_rps if gave_rps else old.requests_per_second,
        new_threads if gave_threads else old.concurrent_threads))  # type: ignore[arg-type]
    _print_limits(store, domain, subject)


@admin_cmd.command("limits")
@click.argument("domain")
@json_option
def show_limits(domain: str, as_json: bool) -> None:
    """Show DOMAIN's and its sub-accounts' rate limits and thread quotas: as set, and what
    applies (the service's defaults where none is set)."""
    store = cli_store()
    check_domain(store, domain)
    rows = _limit_rows(store, domain)
    if as_json:
        echo_json(rows)
        return
    table = Table(title=f"limits of {domain}", title_justify="left")
    for col in ("account", "requests/s", "concurrent threads"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["account"], _shown(r["requests_per_second"]),
                      _shown(r["concurrent_threads"]))
    Console().print(table)


def _limit_rows(store: object, domain: str) -> list[dict]:
    from tilemore.store.limits import Limit

    settings = Settings.from_env()
    limits = store.rate_limits()  # type: ignore[attr-defined]
    subjects = [domain, *(a.id for a in store.subaccounts(domain))]  # type: ignore[attr-defined]
    rows = []
    for subject in subjects:
        mine = limits.get(subject, Limit())
        is_domain = subject == domain
        rows.append({"account": subject, **{
            name: {"set": value, "applies": (value if value is not None else default) or None}
            for name, value, default in (
                ("requests_per_second", mine.requests_per_second,
                 settings.rate_limit_requests_per_second if is_domain else None),
                ("concurrent_threads", mine.concurrent_threads,
                 settings.rate_limit_concurrent_threads if is_domain else None))}})
    return rows


def _shown(value: dict) -> str:
    applies = "no limit" if value["applies"] is None else f"{value['applies']:g}"
    source = {None: " (default)", 0: " (off)"}.get(value["set"], "")
    return applies + source


def _print_limits(store: object, domain: str, subject: str) -> None:
    for r in _limit_rows(store, domain):
        if r["account"] == subject:
            click.echo(f"{subject}: {_shown(r['requests_per_second'])} requests/s, "
                       f"{_shown(r['concurrent_threads'])} concurrent threads")
