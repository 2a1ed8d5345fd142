"""``tilemore errors search``: failed tasks' errors on the service's own index
(TILEMORE_DATABASE_URL, or the SQLite file of TILEMORE_DATA_DIR / TILEMORE_DATABASE), as a
table or JSON; ``GET /errors`` does the same for remote callers, within their domain."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tilemore.api.views import iso, search_body
from tilemore.cli.state import check_domain, cli_error_index, cli_store
from tilemore.settings import Settings
from tilemore.store import ErrorHit
from tilemore.store.error_index import MARK, MAX_LIMIT


@click.group("errors")
def errors_cmd() -> None:
    """Failed tasks' errors: search their types, messages and tracebacks."""


@errors_cmd.command("search")
@click.argument("query")
@click.option("--limit", "-n", type=int, default=20, show_default=True,
              help=f"At most this many results (1 to {MAX_LIMIT}).")
@click.option("--domain", "-d", help="Only this domain's errors (default: every domain).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def search(query: str, limit: int, domain: str | None, as_json: bool) -> None:
    """Search with QUERY: words (all must match), "quoted phrases", OR. On SQLite the
    query is FTS5's syntax (also NOT, prefix*, column:word), on PostgreSQL web-search syntax
    (also -word). Best match first, newest first among equals."""
    settings = Settings.from_env()
    if domain is not None:
        check_domain(cli_store(settings), domain)
    hits = cli_error_index(settings).search_errors(query, domain=domain, limit=limit)
    if as_json:
        click.echo(json.dumps(search_body(query, hits), indent=2, ensure_ascii=False))
        return
    Console().print(_table(query, hits))


def _table(query: str, hits: list[ErrorHit]) -> Table:
    table = Table(title=f"errors matching {query!r}: {len(hits)}", title_justify="left")
    for col in ("time", "thread", "task", "operator", "exception", "attempt", "snippet"):
        table.add_column(col, no_wrap=col in ("time", "thread"), overflow="fold")
    for h in hits:
        e = h.record
        table.add_row(iso(e.at), e.thread_id[:12], e.task_id, e.operator, e.error_type,
                      f"{e.attempt}{' final' if e.final else ''}", _marked(h.snippet))
    return table


def _marked(snippet: str) -> Text:
    """The snippet on one line, its « » markers turned into highlighting."""
    text = Text()
    flat = " ".join(snippet.split())  # a traceback's lines and indents
    for i, part in enumerate(flat.replace(MARK[1], MARK[0]).split(MARK[0])):
        text.append(part, style="bold yellow" if i % 2 else "")
    return text
