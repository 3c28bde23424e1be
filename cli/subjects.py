"""`chronicle forget SUBJECT`: erase a data subject's personal fields (crypto-shredding)."""

from __future__ import annotations

import json

import typer

from cli.common import cli_pool, operator_actor, store
from cli.operations import _follow, _request


def register(app: typer.Typer) -> None:
    """Add the `forget` command to the CLI."""
    app.command("forget")(forget)


def forget(
    subject: str = typer.Argument(..., help="The subject id personal fields were written for (an actor id by default)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the read models' rebuilds to their end."),
    timeout: float = typer.Option(0, min=0, help="Stop waiting after this many seconds (exit 3; 0: wait on)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    """Destroy SUBJECT's data key, purge its snapshots and stored responses, record
    subject.forgotten, and rebuild the read models so its fields read as [erased]."""
    from service_layer.erasure import forget_subject

    actor, actor_type = operator_actor()
    with cli_pool() as pool:

        def request(name: str) -> int | None:
            try:
                return _request(pool, "rebuild", name, {"partitions": None})
            except typer.Exit:  # one is queued already: it runs after the key is gone
                with pool.connection() as conn:
                    row = conn.execute("SELECT id FROM projection_job WHERE projection = %s AND kind = 'rebuild'"
                                       " AND state IN ('requested', 'running') ORDER BY id DESC LIMIT 1",
                                       (name,)).fetchone()
                return row["id"] if row else None

        done = forget_subject(store(pool), subject, actor_id=actor, actor_type=actor_type, request_rebuild=request)
        typer.echo(
            f"forgot {subject}: key {'destroyed' if done.key_destroyed else 'already gone'}, "
            f"{len(done.streams)} streams, {done.snapshots_deleted} snapshots and "
            f"{done.responses_deleted} stored responses deleted (position {done.position})", err=True)
        for name, job_id in done.rebuilds.items():
            if wait and job_id is not None:
                view = _follow(pool, job_id, f"rebuild {name}", timeout)
                if view.get("state") != "done":
                    typer.echo(f"error: rebuild of {name} {view.get('state')}: {view.get('error')}", err=True)
                    raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(done.__dict__, indent=2))
    else:
        typer.echo(f"{subject}\t{len(done.streams)} streams erased\tposition {done.position}")
