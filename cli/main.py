"""The `chronicle` command line: migrate the store, report its state, start Chronicle."""

from __future__ import annotations

import json
import os

import typer
from rich.table import Table

from cli.common import console, database_url, migrated_database_url
from infrastructure.config import Settings, get_settings
from infrastructure.migrations import pending_migrations

app = typer.Typer(help="Chronicle: an event-sourced backend for a chain workspace.", no_args_is_help=True)


@app.callback()
def _configure_logs(
    verbose: bool = typer.Option(
        False, "--verbose", "-v",
        help="Also show the libraries' lines on stderr: the embedded PostgreSQL's initdb and pg_ctl, httpx requests.",
    ),
) -> None:
    """Every command logs in CHRONICLE_LOG_FORMAT at CHRONICLE_LOG_LEVEL (infrastructure/logs.py).

    Only a command's data goes to stdout; notices, progress, logs and errors go to stderr.
    """
    from cli.output import configure_output
    from infrastructure.logs import configure_logging, resolved_format

    settings = get_settings()
    configure_logging(settings)
    # The processes a command starts log as it does: dramatiq's worker processes write to a pipe
    # to this one, so on a terminal `auto` would make them JSON beside this process's text.
    os.environ["CHRONICLE_LOG_FORMAT"] = resolved_format(settings.chronicle_log_format)
    configure_output(verbose, settings.chronicle_data_dir)


@app.command()
def migrate() -> None:
    """Apply the schema migrations that are not applied yet (safe to run twice, or at once)."""
    settings = get_settings()
    url, applied = migrated_database_url(settings)
    if applied:
        for name in applied:
            console.print(f"applied [bold]{name}[/bold]")
    else:
        console.print("schema is up to date")
    console.print(f"{write_definitions(url, settings)} event types in event_definitions")


def write_definitions(url: str, settings: Settings) -> int:
    """Record every registered event type and its JSON Schema in `event_definitions`."""
    from service_layer.bootstrap import write_event_definitions
    from infrastructure.db import create_pool
    from infrastructure.event_store import EventStore

    pool = create_pool(url, settings.model_copy(update={"chronicle_pool_min_size": 1}), name="chronicle-migrate")
    try:
        return write_event_definitions(EventStore(pool, settings=settings))
    finally:
        pool.close()


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Report the event store's state: migrations, streams (an estimate), head and what holds it back."""
    report = store_report(database_url(get_settings()))
    if as_json:
        typer.echo(json.dumps(report, default=str, indent=2))
        return
    _print_report(report)


def store_report(url: str) -> dict[str, object]:
    """The store's state as plain data: pending migrations, counts, head, safe position, blockers."""
    import psycopg
    from psycopg.rows import dict_row

    pending = pending_migrations(url)
    report: dict[str, object] = {"pending_migrations": pending}
    if "0001_event_store.sql" in pending:
        return report
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        # The head is the last committed position; log_status() (schema/0009) also says since
        # when readers are held below it. A store not yet migrated that far reports without it.
        log = ("log_status()" if "0009_reader_lock_space.sql" not in pending else
               "(SELECT coalesce(max(position), 0) AS head, safe_position() AS safe,"
               " NULL::timestamptz AS held_back_since FROM events)")
        report.update(
            conn.execute(
                # Nothing here counts the log: the head is a position, and the stream count is the
                # planner's estimate (pg_class.reltuples, kept by autovacuum), named as one.
                "SELECT (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'streams'::regclass)"
                f" AS streams_estimate, s.head, s.safe AS safe_position, s.held_back_since FROM {log} s"
            ).fetchone()
        )
        report["blockers"] = conn.execute("SELECT * FROM log_blockers()").fetchall()
        if "0018_subscriptions.sql" not in pending:
            report.update(following(conn, report["safe_position"]))
    return report


def _print_report(report: dict[str, object]) -> None:
    table = Table(title="Chronicle event store", show_header=False)
    for key in ("streams_estimate", "head", "safe_position", "held_back_since"):
        if report.get(key) is not None:
            table.add_row(key.replace("_", " "), str(report[key]))
    pending = report["pending_migrations"]
    table.add_row("pending migrations", ", ".join(pending) if pending else "none")
    for blocker in report.get("blockers", []):
        table.add_row(
            "held back by", f"pid {blocker['pid']} at position {blocker['held_position']} since {blocker['xact_start']}"
        )
    for group in report.get("groups", []):
        alive = sum(1 for m in group["members"] if m["alive"])
        table.add_row(f"group {group['name']}", f"{alive} members, lag {group['lag_events']} events,"
                      f" {group['dead_letters']} parked")
    if "subscriptions" in report:
        table.add_row("open feeds", str(report["subscriptions"]))
    console.print(table)


def following(conn: object, safe: int) -> dict[str, object]:
    """Who follows the log: open feeds and each consumer group's status."""
    from service_layer.groups import group_rows, partition_status

    return {"subscriptions": conn.execute("SELECT count(*) AS n FROM subscription").fetchone()["n"],
            "groups": [partition_status(conn, g, safe) for g in group_rows(conn)]}


from cli import operations  # noqa: E402,F401 - adds the projections and dead-letters commands
from cli import subjects  # noqa: E402 - `forget`
from cli.commands import register_commands  # noqa: E402 - the commands below need `app`

register_commands(app)
subjects.register(app)


def main() -> None:
    app(prog_name="chronicle")


if __name__ == "__main__":
    main()
