"""`chronicle archive list|export|restore`: cold segments of the log to files and back.

Export and restore detach or attach a segment of `events`, which only its owner may: they connect
with the migrations' URL (DATABASE_MIGRATION_URL, else DATABASE_URL, or the embedded store's
owner), never the application's login. docs/log-segments.md describes the files.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import typer
from rich.table import Table

from cli.common import console, echo_json, store_urls
from infrastructure.config import get_settings
from infrastructure.log_archive import ArchiveError, export_segment, restore_segment
from infrastructure.log_segments import list_segments

archive_app = typer.Typer(help="Archive cold segments of the log to files, and restore them.", no_args_is_help=True)


def _owner_url() -> str:
    """The URL of the schema's owner: the one migrations use."""
    return store_urls(get_settings()).migration


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@archive_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every segment of the log: its positions, and where an archived one's files are."""
    with psycopg.connect(_owner_url()) as conn:
        segments = [s.as_json() for s in list_segments(conn)]
    if as_json:
        echo_json(segments)
        return
    table = Table("segment", "positions", "state", "events", "archive")
    for s in segments:
        state = f"archived {s['archived_at'][:19]}" if s["archived_at"] else "attached"
        events = str(s["event_count"]) if s["event_count"] is not None else ""
        table.add_row(s["segment"], f"{s['first_position']}-{s['last_position']}", state, events, s["archive"] or "")
    console.print(table)


@archive_app.command("export")
def export_command(
    segment: str = typer.Argument(..., help="The segment: its table name (events_segment_3) or number."),
    to: Path = typer.Option(..., "--to", help="The folder to write the archive's two files to."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Write a cold segment to files, check them against the log, then detach and drop it."""
    try:
        manifest = export_segment(_owner_url(), segment, to)
    except (ArchiveError, psycopg.errors.InsufficientPrivilege) as exc:
        _fail(exc)
    if as_json:
        echo_json(manifest)
    else:
        typer.echo(f"archived {manifest['segment']}: {manifest['event_count']} events, positions"
                   f" {manifest['first_position']}-{manifest['last_position']}, in {to / manifest['data_file']}")


@archive_app.command("restore")
def restore_command(
    manifest: Path = typer.Argument(..., exists=True, dir_okay=False, help="The archive's .manifest.json file."),
) -> None:
    """Check an archive against its manifest and the hash chain, then attach it to the log again."""
    try:
        restored = restore_segment(_owner_url(), manifest)
    except (ArchiveError, psycopg.errors.InsufficientPrivilege) as exc:
        _fail(exc)
    typer.echo(f"restored {restored['segment']}: {restored['event_count']} events, positions"
               f" {restored['first_position']}-{restored['last_position']}")
