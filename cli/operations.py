"""The operators' commands: `chronicle projections status|rebuild|replay|verify`, `dead-letters ...`.

Rebuild and replay are queued as jobs that a worker runs (`chronicle up`, or `chronicle worker`
with REDIS_URL); the command follows the job with a live progress bar (done, total, rate, ETA)
unless --no-wait. Every action is recorded as an `operator.*` event naming $CHRONICLE_ACTOR
(default cli:$USER).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from projections.dead_letters import GROUP_PREFIX, list_dead_letters, retry_dead_letters, skip_dead_letter
from projections.status import status
from projections.verify import verify
from cli.output import err_console
from cli.common import cli_pool, console, dead_letters_app, echo_json, operator_actor, projections_app, store
from service_layer.operator_events import record_operator_action
from infrastructure.config import get_settings
from infrastructure.log_status import read_log_status
from projections.catalog import PROJECTORS


def _names(name: str) -> list[str]:
    if name == "all":
        return list(PROJECTORS)
    if name not in PROJECTORS:
        typer.echo(f"error: no projection {name!r}; known: {', '.join(sorted(PROJECTORS))}, or all", err=True)
        raise typer.Exit(2)
    return [name]


def _record(pool: Any, event_type: str, target: str, details: dict[str, Any]) -> None:
    actor, kind = operator_actor()
    record_operator_action(store(pool), event_type, target, details, actor_id=actor, actor_type=kind)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>9} ev/s"), TimeRemainingColumn(), console=err_console,
    )  # on stderr: stdout carries only the command's result


@projections_app.command("status")
def projections_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every projection's partitions: checkpoint, head, lag and state."""
    with cli_pool() as pool:
        rows = [asdict(p) for p in status(pool)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("none: no projection has a checkpoint yet (a worker makes them: `chronicle up` or `chronicle worker`)")
        return
    table = Table(title="projections")
    for column in ("projection", "partition", "checkpoint", "head", "lag", "lag s", "state", "dead letters"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["projection"], f"{r['partition']}/{r['partitions']}", str(r["checkpoint"]), str(r["head"]),
                      str(r["lag_events"]), f"{r['lag_seconds']:.1f}", r["state"], str(r["dead_letters"]))
    console.print(table)


# Seconds a requested job may wait for a worker before the CLI says that none has taken it.
NOTICE_SECONDS = 6.0
REPORT_WAIT_SECONDS = 5.0  # how long to wait for the job's completion event once it ended
TIMED_OUT = 3  # exit code: still not finished when --timeout ran out (the job stays queued)


def _request(pool: Any, kind: str, projection: str, options: dict[str, Any]) -> int:
    """Queue a job with its operator event, send the wake-up if a broker reaches the workers; its id."""
    from projections.jobs import JobInProgress
    from workers.actors import wake_job as wake
    from workers.jobs import request

    actor, kind_of_actor = operator_actor()
    try:
        requested = request(store(pool), kind, projection, options, actor_id=actor, actor_type=kind_of_actor)
    except JobInProgress as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"requested {kind} of {projection}: job {requested.job.id}", err=True)
    if get_settings().redis_url:  # else no worker reads this process's broker: their tick finds the job
        try:
            wake(kind, projection)
        except Exception as exc:  # noqa: BLE001 - the workers' tick finds the job
            typer.echo(f"warning: could not send the wake-up ({exc}); a worker's tick will find the job", err=True)
    return requested.job.id


def _follow(pool: Any, job_id: int, label: str, timeout: float) -> dict[str, Any]:
    """Show the job's progress until it ends; exit TIMED_OUT after `timeout` seconds (0: never)."""
    from projections.jobs import job_view

    started = time.monotonic()
    noticed = False
    with _progress() as bar:
        task = bar.add_task(label, total=None, rate="-")
        while True:
            view = job_view(pool, job_id=job_id) or {}
            state = view.get("state")
            if view.get("total"):
                bar.update(task, total=max(view["total"], 1), completed=view["done"],
                           rate=f"{view['rate']:,.0f}" if view.get("rate") else "-")
            if state in ("done", "failed", "crashed"):
                reported = time.monotonic() + REPORT_WAIT_SECONDS
                while state != "crashed" and not (view.get("job") or {}).get("reported_at") \
                        and time.monotonic() < reported:
                    time.sleep(0.05)  # the worker appends the completion event just after the job ends
                    view = job_view(pool, job_id=job_id) or view
                return view
            waited = time.monotonic() - started
            if state == "requested" and waited > NOTICE_SECONDS and not noticed:
                noticed = True
                typer.echo(f"no worker has picked up job {job_id} after {waited:.0f} s: is one running? "
                           "(`chronicle up`, or `chronicle worker` with REDIS_URL); still waiting "
                           "(Ctrl-C stops waiting, the job stays queued)", err=True)
            if timeout and waited > timeout:
                bar.stop()
                typer.echo(f"error: job {job_id} is still {state} after {timeout:g} s; it stays queued "
                           "(follow it with `chronicle projections status`)", err=True)
                raise typer.Exit(TIMED_OUT)
            time.sleep(0.2)


def _queued(kind: str, name: str, options: dict[str, Any], wait: bool) -> Iterator[tuple[Any, str, int]]:
    """Queue a `kind` job for each projection `name` names (or all); with `wait`, yield each
    (pool, projection, job id) in turn for the command to follow, before queuing the next."""
    with cli_pool() as pool:
        for projection in _names(name):
            job_id = _request(pool, kind, projection, options)
            if wait:
                yield pool, projection, job_id


def _follow_to_done(pool: Any, job_id: int, kind: str, projection: str, timeout: float) -> dict[str, Any]:
    """Follow the job as _follow does; its final view if it is done, else exit 1 saying how it ended."""
    view = _follow(pool, job_id, f"{kind} {projection}", timeout)
    if view.get("state") != "done":
        typer.echo(f"error: {kind} of {projection} {view.get('state')}: {view.get('error')}", err=True)
        raise typer.Exit(1)
    return view


@projections_app.command("rebuild")
def projections_rebuild(
    name: str = typer.Argument(..., help="A projection name, or all."),
    partitions: int | None = typer.Option(None, min=1, max=1024, help="A new partition count."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job to its end, or return once queued."),
    timeout: float = typer.Option(0, min=0, help="Stop waiting after this many seconds (exit 3; 0: wait on)."),
) -> None:
    """Queue a rebuild for a worker (shadow tables while reads go on, then swap); shows its progress."""
    for pool, projection, job_id in _queued("rebuild", name, {"partitions": partitions}, wait):
        view = _follow_to_done(pool, job_id, "rebuild", projection, timeout)
        typer.echo(f"rebuilt {projection}: {view['done']} events up to position {view['position']} (job {job_id})")


@projections_app.command("replay")
def projections_replay(
    name: str = typer.Argument(..., help="A projection name, or all."),
    from_position: int = typer.Option(0, "--from", min=0, help="The log position to replay from."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the re-application, or return once queued."),
    timeout: float = typer.Option(0, min=0, help="Stop waiting after this many seconds (exit 3; 0: wait on)."),
) -> None:
    """Queue a replay: a worker moves the checkpoints back and the workers re-apply the log; shows progress."""
    for pool, projection, job_id in _queued("replay", name, {"from_position": from_position}, wait):
        started = time.monotonic()
        view = _follow_to_done(pool, job_id, "replay", projection, timeout)
        total = view["job"]["events_done"] or 0
        _follow_lag(pool, projection, total, started, timeout)
        typer.echo(f"replayed {projection} from position {from_position}: {total} events (job {job_id})")


def _follow_lag(pool: Any, projection: str, total: int, started: float, timeout: float) -> None:
    """Show the workers re-applying a replayed projection until its lag is zero (or events park)."""
    with _progress() as bar:
        task = bar.add_task(f"re-apply {projection}", total=max(total, 1), rate="-")
        previous = None
        while True:
            rows = status(pool, projection)
            lag = sum(p.lag_events for p in rows)
            done = max(total - lag, 0)
            bar.update(task, completed=done, rate=f"{done / max(time.monotonic() - started, 1e-6):,.0f}")
            if lag == 0:
                return
            if lag == previous and _held_back(pool):
                return
            previous = lag
            if any(p.state == "parked" for p in rows):
                typer.echo("some events are parked: see `chronicle dead-letters list`", err=True)
                return
            if timeout and time.monotonic() - started > timeout:
                typer.echo(f"error: {projection} still lags by {lag} events after {timeout:g} s", err=True)
                raise typer.Exit(TIMED_OUT)
            time.sleep(0.2)


def _held_back(pool: Any) -> bool:
    """Whether an open append holds readers below the head (lag, counted to the head, then stays)."""
    with pool.connection() as conn:
        log = read_log_status(conn)
    if log.held_back_since is None:
        return False
    typer.echo(f"the log is held back at position {log.safe} (head {log.head}) since "
               f"{log.held_back_since.isoformat()} by an open append: see `chronicle status`", err=True)
    return True


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
            report = verify(pool, projection, limit=limit)
            _record(pool, "operator.projection_verified", f"projection:{projection}", report.as_dict())
            reports.append(report)
    if as_json:
        echo_json(reports[0].as_dict() if name not in (None, "all") else [r.as_dict() for r in reports])
    elif any(r.differences for r in reports):
        table = Table(title="differing rows")
        for column in ("projection", "table", "key", "kind", "columns"):
            table.add_column(column, overflow="fold")
        for r in reports:
            for d in r.differences:
                table.add_row(r.projection, d.table, ", ".join(f"{k}={v}" for k, v in d.key.items()), d.kind,
                              ", ".join(d.columns))
        console.print(table)
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
    group: str | None = typer.Option(None, help="Only this consumer group's (its projection is group:<name>)."),
    status: str = typer.Option("parked", help="parked, retried or skipped."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Parked events, in log order (of projections and consumer groups)."""
    if group is not None:
        projection = GROUP_PREFIX + group
    with cli_pool() as pool:
        rows = [asdict(d) for d in list_dead_letters(pool, projection, status=status, limit=1000)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo(f"none: no {status} dead letters" + (f" for {projection}" if projection else ""))
        return
    table = Table(title=f"dead letters ({status})")
    for column in ("id", "projection", "position", "stream", "type", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r["id"]), r["projection"], str(r["position"]), r["stream_id"], r["type"],
                      str(r["attempts"]), r["error"][:120])
    console.print(table)


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
        outcome = retry_dead_letters(pool, row["projection"], stream_id=row["stream_id"])
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
        outcome = skip_dead_letter(pool, dead_letter_id)
        _record(pool, "operator.dead_letter_skipped", f"dead_letter:{dead_letter_id}",
                {"projection": row["projection"], "stream_id": row["stream_id"], "resumed": outcome.resumed})
    typer.echo(f"skipped {dead_letter_id}; resumed: {', '.join(outcome.resumed) or '-'}")
