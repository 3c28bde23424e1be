"""The operators' commands: `chronicle projections status|rebuild|replay|verify`, `dead-letters ...`.

Rebuild and replay show a live progress bar (done, total, rate, ETA). Every action is
recorded as an `operator.*` event naming $CHRONICLE_ACTOR (default cli:$USER).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

import projections as pj
from api.cli_commands import _cli, _echo_json, _operator_actor, _store, cli_pool, dead_letters_app, projections_app
from api.operator_events import record_operator_action
from infrastructure.config import get_settings
from projections.catalog import PROJECTORS


def _names(name: str) -> list[str]:
    if name == "all":
        return list(PROJECTORS)
    if name not in PROJECTORS:
        typer.echo(f"error: no projection {name!r}; known: {', '.join(sorted(PROJECTORS))}, or all", err=True)
        raise typer.Exit(2)
    return [name]


def _record(pool: Any, event_type: str, target: str, details: dict[str, Any]) -> None:
    actor, kind = _operator_actor()
    record_operator_action(_store(pool), event_type, target, details, actor_id=actor, actor_type=kind)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>9} ev/s"), TimeRemainingColumn(), console=_cli().console,
    )


@projections_app.command("status")
def projections_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every projection's partitions: checkpoint, head, lag and state."""
    with cli_pool() as pool:
        rows = [asdict(p) for p in pj.status(pool)]
    if as_json:
        _echo_json(rows)
        return
    table = Table(title="projections")
    for column in ("projection", "partition", "checkpoint", "head", "lag", "lag s", "state", "dead letters"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["projection"], f"{r['partition']}/{r['partitions']}", str(r["checkpoint"]), str(r["head"]),
                      str(r["lag_events"]), f"{r['lag_seconds']:.1f}", r["state"], str(r["dead_letters"]))
    _cli().console.print(table)


@projections_app.command("rebuild")
def projections_rebuild(
    name: str = typer.Argument(..., help="A projection name, or all."),
    partitions: int | None = typer.Option(None, min=1, max=1024, help="A new partition count."),
) -> None:
    """Rebuild into shadow tables while reads go on, then swap; shows live progress."""
    with cli_pool() as pool:
        for projection in _names(name):
            _record(pool, "operator.projection_rebuilt", f"projection:{projection}", {"partitions": partitions})
            outcome: dict[str, Any] = {}

            def run(projection: str = projection) -> None:
                try:
                    outcome["result"] = pj.rebuild(pool, projection, partitions=partitions)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    outcome["error"] = exc

            started = time.time()
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            with _progress() as bar:
                task = bar.add_task(f"rebuild {projection}", total=None, rate="-")
                while thread.is_alive():
                    _show(bar, task, pj.rebuild_progress(pool, projection), started)
                    thread.join(0.2)
                _show(bar, task, pj.rebuild_progress(pool, projection), started)
            if "error" in outcome:
                typer.echo(f"error: rebuild of {projection} failed: {outcome['error']}", err=True)
                raise typer.Exit(1)
            done = outcome["result"]
            typer.echo(f"rebuilt {projection}: {done.done} events up to position {done.position}")


def _show(bar: Progress, task: Any, progress: Any, started: float) -> None:
    if progress is None or progress.started_at.timestamp() < started - 1:
        return
    bar.update(task, total=max(progress.total, 1), completed=progress.done,
               rate=f"{progress.rate:,.0f}" if progress.rate else "-")


@projections_app.command("replay")
def projections_replay(
    name: str = typer.Argument(..., help="A projection name, or all."),
    from_position: int = typer.Option(0, "--from", min=0, help="The log position to replay from."),
) -> None:
    """Move the checkpoints back to a position and re-apply the log from there, with progress."""
    settings = get_settings()
    with cli_pool() as pool:
        for projection in _names(name):
            moved = pj.replay(pool, projection, from_position)
            _record(pool, "operator.projection_replayed", f"projection:{projection}",
                    {"from_position": from_position, "partitions": moved})
            total = sum(p.lag_events for p in pj.status(pool, projection))
            projector = pj.get_projector(projection)
            started = time.monotonic()
            with _progress() as bar:
                task = bar.add_task(f"replay {projection}", total=max(total, 1), rate="-")
                while True:
                    for partition in range(settings.chronicle_partitions):
                        pj.catch_up(pool, projector, partition, partitions=settings.chronicle_partitions,
                                    batch_size=500)
                    lag = sum(p.lag_events for p in pj.status(pool, projection))
                    done = max(total - lag, 0)
                    elapsed = max(time.monotonic() - started, 1e-6)
                    bar.update(task, completed=done, rate=f"{done / elapsed:,.0f}")
                    if lag == 0:
                        break
                    if any(p.state == "parked" for p in pj.status(pool, projection)):
                        typer.echo("some events are parked: see `chronicle dead-letters list`", err=True)
                        break
            typer.echo(f"replayed {projection} from position {from_position}: {total} events")


@projections_app.command("verify")
def projections_verify(
    name: str | None = typer.Argument(None, help="A projection name; every projection if left out."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (a list without NAME)."),
    limit: int = typer.Option(100, min=1, max=10_000, help="Differences listed per projection."),
) -> None:
    """Rebuild into scratch tables at the live checkpoints and compare row by row; exit 1 if any row differs."""
    with cli_pool() as pool:
        reports = []
        for projection in _names(name or "all"):
            report = pj.verify(pool, projection, limit=limit)
            _record(pool, "operator.projection_verified", f"projection:{projection}", report.as_dict())
            reports.append(report)
    if as_json:
        _echo_json(reports[0].as_dict() if name not in (None, "all") else [r.as_dict() for r in reports])
    elif any(r.differences for r in reports):
        table = Table(title="differing rows")
        for column in ("projection", "table", "key", "kind", "columns"):
            table.add_column(column, overflow="fold")
        for r in reports:
            for d in r.differences:
                table.add_row(r.projection, d.table, ", ".join(f"{k}={v}" for k, v in d.key.items()), d.kind,
                              ", ".join(d.columns))
        _cli().console.print(table)
    for r in reports:
        checkpoints = f"{min(r.checkpoints)}..{max(r.checkpoints)}" if r.checkpoints else "-"
        typer.echo(f"{r.projection}: {r.differing_rows} differing rows at checkpoints {checkpoints}"
                   f" ({r.parked_streams} parked streams left out)", err=True)
        for f in r.build_failures:
            typer.echo(f"  the rebuild could not apply position {f.position} of {f.stream_id}: {f.error}", err=True)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@dead_letters_app.command("list")
def dead_letters_list(
    projection: str | None = typer.Option(None, help="Only this projection."),
    status: str = typer.Option("parked", help="parked, retried or skipped."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Parked events, in log order."""
    with cli_pool() as pool:
        rows = [asdict(d) for d in pj.list_dead_letters(pool, projection, status=status, limit=1000)]
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"dead letters ({status})")
    for column in ("id", "projection", "position", "stream", "type", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r["id"]), r["projection"], str(r["position"]), r["stream_id"], r["type"],
                      str(r["attempts"]), r["error"][:120])
    _cli().console.print(table)


def _parked(pool: Any, dead_letter_id: int) -> dict[str, Any]:
    with pool.connection() as conn:
        row = conn.execute("SELECT projection, stream_id, status FROM dead_letter WHERE id = %s AND NOT shadow",
                           (dead_letter_id,)).fetchone()
    if row is None or row["status"] != "parked":
        typer.echo(f"error: no parked dead letter {dead_letter_id}", err=True)
        raise typer.Exit(1)
    return row


@dead_letters_app.command("retry")
def dead_letters_retry(dead_letter_id: int = typer.Argument(..., help="A dead letter id (see list).")) -> None:
    """Re-apply a parked event and the rest of its stream, in order (after a fix)."""
    with cli_pool() as pool:
        row = _parked(pool, dead_letter_id)
        outcome = pj.retry_dead_letters(pool, row["projection"], stream_id=row["stream_id"])
        _record(pool, "operator.dead_letter_retried", f"dead_letter:{dead_letter_id}",
                {"projection": row["projection"], "stream_id": row["stream_id"], "resumed": outcome.resumed,
                 "still_parked": outcome.still_parked})
    typer.echo(f"resumed: {', '.join(outcome.resumed) or '-'}; still parked: {', '.join(outcome.still_parked) or '-'}")
    if outcome.still_parked:
        raise typer.Exit(1)


@dead_letters_app.command("skip")
def dead_letters_skip(dead_letter_id: int = typer.Argument(..., help="A dead letter id (see list).")) -> None:
    """Never apply this event; the later parked events of its stream resume in order."""
    with cli_pool() as pool:
        row = _parked(pool, dead_letter_id)
        outcome = pj.skip_dead_letter(pool, dead_letter_id)
        _record(pool, "operator.dead_letter_skipped", f"dead_letter:{dead_letter_id}",
                {"projection": row["projection"], "stream_id": row["stream_id"], "resumed": outcome.resumed})
    typer.echo(f"skipped {dead_letter_id}; resumed: {', '.join(outcome.resumed) or '-'}")
