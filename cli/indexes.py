"""`chronicle indexes add|list|drop` (metadata indexes operators choose) and `chronicle prune`.

Index DDL needs the right to create indexes on the document table, which the table's owner has.
It connects with DATABASE_URL (or the embedded store), the same URL migrations use; where the
application's login may not run DDL, run these commands with the owner's DATABASE_URL.
"""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from cli.common import cli_pool, console, database_url, echo_json
from infrastructure.config import get_settings
from infrastructure.read_indexes import add_index, check, drop_index, list_indexes

indexes_app = typer.Typer(help="Expression indexes on document metadata: add, list, drop.", no_args_is_help=True)


def _ddl_url() -> str:
    """The URL index DDL runs on: the migrations' (DATABASE_URL), the document table owner's."""
    return database_url(get_settings())


@indexes_app.command("add")
def add(
    field: str = typer.Option(..., "--field", help="The metadata field, e.g. agent_type."),
    document_type: str | None = typer.Option(None, "--type", help="Only documents of this type (recommended)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build an index on metadata.<field> (of one document type) without blocking writes.

    GET /v1/documents?type=<type>&metadata.<field>=<value> then reads its page from the index.
    """
    try:
        check(document_type, field)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from infrastructure.migrations import migrate

    url = _ddl_url()
    migrate(url)  # the document table must exist
    index = add_index(url, document_type, field)
    if as_json:
        echo_json(asdict(index))
    else:
        console.print(f"built {index.name} ({index.size_bytes} bytes): {index.definition}")


@indexes_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """The metadata indexes operators added, with their size and whether they are valid."""
    with cli_pool() as pool, pool.connection() as conn:
        found = list_indexes(conn)
    if as_json:
        echo_json([asdict(i) for i in found])
        return
    table = Table("name", "type", "field", "valid", "bytes")
    for i in found:
        table.add_row(i.name, i.document_type or "(any)", i.field, "yes" if i.valid else "no", str(i.size_bytes))
    console.print(table)


@indexes_app.command("drop")
def drop(name: str = typer.Argument(..., help="The index name, as `chronicle indexes list` shows it.")) -> None:
    """Drop a metadata index without blocking writes."""
    if not drop_index(_ddl_url(), name):
        typer.echo(f"error: no metadata index {name!r} (see `chronicle indexes list`)", err=True)
        raise typer.Exit(1)
    console.print(f"dropped {name}")


def prune(
    days: float | None = typer.Option(None, "--days", min=0.0001,
                                      help="Age in days (default: CHRONICLE_VERSION_RETENTION_DAYS)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove old document versions' bodies from the read model (tagged and latest versions keep theirs)."""
    from projections.retention import prune_versions

    days = days if days is not None else get_settings().chronicle_version_retention_days
    if days is None:
        typer.echo("error: give --days or set CHRONICLE_VERSION_RETENTION_DAYS", err=True)
        raise typer.Exit(2)
    with cli_pool() as pool:
        result = prune_versions(pool, days)
    if as_json:
        echo_json(asdict(result))
    else:
        console.print(f"read {result.versions_read} versions, pruned {result.bodies_pruned} bodies"
                      f" recorded before {result.cutoff.isoformat()}")
