"""``tilemore admin gc | usage | delete-domain-data``: the data lifecycle by hand
(docs/lifecycle.md). They work on the store and the blobs the service uses."""

from __future__ import annotations

import click

from tilemore.blobs import open_blob_store
from tilemore.cli.format import echo_json, json_option
from tilemore.cli.state import check_domain, cli_error_index, cli_settings, cli_store
from tilemore.lifecycle import Collector, Lifecycle, Report
from tilemore.store.lifecycle import open_lifecycle_store


def _collector() -> Collector:
    settings = cli_settings()
    cli_store(settings)  # the threads' tables exist, and the command names its database
    cli_error_index(settings)  # so does the error index the pass expires
    store = click.get_current_context().with_resource(open_lifecycle_store(settings.db))
    return Collector(Lifecycle(store, open_blob_store(settings.blobs), settings.retention))


def size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def _print(report: Report, verb: str) -> None:
    blobs = ", ".join(f"{c:,} {kind} ({size(b)})" for kind, (c, b) in sorted(
        report.blobs.items())) or "no blobs"
    click.echo(f"{verb}: {report.records:,} thread records, {blobs}; {size(report.bytes)} in all")
    if not report.dry_run:
        click.echo(f"also: {report.refs:,} expired references, {report.errors:,} indexed "
                   f"errors, {report.webhooks:,} webhook deliveries; {report.dated:,} ended "
                   "threads dated")
    if report.kept:
        click.echo(f"kept: {report.kept:,} blobs the store refused to delete or that were "
                   "written again meanwhile (the next pass tries again)")
    if report.blob_store_error:
        click.echo(f"no blob removed: the blob store cannot be reached ({report.blob_store_error});"
                   " the next pass tries again", err=True)


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Say what a pass would remove; remove nothing.")
@click.option("--orphans", is_flag=True,
              help="Instead: remove stored blobs no record knows (reads the whole store).")
@click.option("--orphan-age", type=click.FloatRange(min=3600), default=86400.0,
              show_default=True, help="Seconds since an orphan was written, at least.")
@json_option
def gc_cmd(dry_run: bool, orphans: bool, orphan_age: float, as_json: bool) -> None:
    """Remove what expired now: one collector pass (conductors run one every minute). A dry
    run counts one batch of each kind at most."""
    collector = _collector()
    if orphans:
        report = collector.sweep_orphans(orphan_age, dry_run)
    else:
        report = collector.run_pass(dry_run=dry_run)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report, "would remove" if dry_run else "removed")
    if report.blob_store_error:
        click.get_current_context().exit(1)  # for scripts: the pass did not finish


@click.command("usage")
@click.argument("domain", required=False)
@json_option
def usage_cmd(domain: str | None, as_json: bool) -> None:
    """Thread records, and blobs and bytes by kind, per domain (a blob domains share counts
    for each)."""
    rows = _collector().store.usage(domain)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("nothing stored" + (f" for domain {domain}" if domain else ""))
    for row in rows:
        kinds = ", ".join(f"{kind} {v['count']:,} ({size(v['bytes'])})"
                          for kind, v in sorted(row["blobs"].items())) or "no blobs"
        click.echo(f"{row['domain']}: {row['threads']:,} threads; {kinds}")


@click.command("delete-domain-data")
@click.argument("domain")
@click.option("--yes", is_flag=True, help="Do it (without it: say what would go).")
def delete_domain_data_cmd(domain: str, yes: bool) -> None:
    """Delete DOMAIN's ended threads, their blobs no one else uses and its indexed errors.
    Its accounts, tokens and ledger stay; running threads finish first (run it again)."""
    collector = _collector()
    check_domain(cli_store(), domain)
    if not yes:
        usage = collector.store.usage(domain)
        threads = usage[0]["threads"] if usage else 0
        click.echo(f"would delete domain {domain}'s data: {threads:,} thread records and the "
                   "blobs only they use; the ledger stays. Run again with --yes")
        return
    report = collector.run_pass(domain=domain)
    _print(report, f"deleted for {domain}")
    running = cli_store().backlog().get(domain, 0)
    if running:
        click.echo(f"{running:,} threads still running: run this again once they end")


COMMANDS = (gc_cmd, usage_cmd, delete_domain_data_cmd)
