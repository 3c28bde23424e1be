"""`chronicle forget SUBJECT`: erase a data subject's personal fields (crypto-shredding)."""

from __future__ import annotations

import json

import typer

from cli.common import cli_pool, operator_actor, store
from cli.operations import _follow_to_done
from infrastructure.config import get_settings


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
    from workers.actors import wake_job
    from workers.jobs import request_rebuild_after_erasure

    actor, actor_type = operator_actor()
    with cli_pool() as pool:

        def request(name: str) -> int | None:
            job_id, new = request_rebuild_after_erasure(store(pool), name, actor_id=actor, actor_type=actor_type)
            typer.echo(f"{'requested' if new else 'joined the queued'} rebuild of {name}: job {job_id}", err=True)
            if new and get_settings().redis_url:  # else the workers' tick finds the job
                try:
                    wake_job("rebuild", name)
                except Exception as exc:  # noqa: BLE001 - the workers' tick finds the job
                    typer.echo(f"warning: could not send the wake-up ({exc})", err=True)
            return job_id

        done = forget_subject(store(pool), subject, actor_id=actor, actor_type=actor_type, request_rebuild=request)
        typer.echo(
            f"forgot {subject}: key {'destroyed' if done.key_destroyed else 'already gone'}, "
            f"{len(done.streams)} streams, {done.snapshots_deleted} snapshots and "
            f"{done.responses_deleted} stored responses deleted (position {done.position})", err=True)
        for name, job_id in done.rebuilds.items():
            if wait and job_id is not None:
                _follow_to_done(pool, job_id, "rebuild", name, timeout)
    if as_json:
        typer.echo(json.dumps(done.__dict__, indent=2))
    else:
        typer.echo(f"{subject}\t{len(done.streams)} streams erased\tposition {done.position}")
