"""``tilemore admin webhooks DOMAIN``: a domain's webhook endpoints and how their deliveries
stand (docs/api.md, Webhooks). Secrets are never shown."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from tilemore.api.views import iso
from tilemore.cli.format import echo_json, json_option
from tilemore.cli.state import check_domain, cli_store

STATUSES = ("pending", "delivered", "given_up")


@click.command("webhooks")
@click.argument("domain")
@json_option
def webhooks_cmd(domain: str, as_json: bool) -> None:
    """List DOMAIN's webhook endpoints, with their deliveries by status."""
    store = cli_store()
    check_domain(store, domain)
    counts = store.delivery_counts(domain)
    rows = [{"id": e.id, "url": e.url, "events": list(e.events),
             "low_balance_threshold": e.low_balance, "created": iso(e.created_at),
             "deliveries": {s: counts.get(e.id, {}).get(s, 0) for s in STATUSES}}
            for e in store.endpoints(domain)]
    if as_json:
        echo_json(rows)
        return
    table = Table(title=f"webhook endpoints of {domain}", title_justify="left")
    for col in ("id", "url", "events", "created", *STATUSES):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["url"], " ".join(r["events"]), r["created"],
                      *(str(r["deliveries"][s]) for s in STATUSES))
    Console().print(table)
