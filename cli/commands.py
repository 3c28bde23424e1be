"""The `chronicle` commands beyond migrate/status: up, serve, worker, keys, history, operations."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import (
    cli_pool, console, database_url, dead_letters_app, echo_json, keys_app, migrated_database_url, operator_actor,
    projections_app, store, use_master_key,
)
from infrastructure.config import get_settings

logger = logging.getLogger("chronicle.cli")


# -- serving ---------------------------------------------------------------------------------

def _serve(url: str, host: str, port: int, broker: str, log_level: str, processes: int = 1) -> None:
    """Serve the API on one process, or on `processes` uvicorn processes sharing the socket.

    Several processes let the API use every core: a command's Python (validation, the aggregate,
    JSON) holds one process's GIL, so one process tops out at one core.
    """
    import uvicorn

    options = server_options(host, port, log_level)
    if processes > 1:
        # The public multi-process path: each process builds its app from the environment.
        os.environ.update(DATABASE_URL=url, CHRONICLE_API_BROKER=broker, CHRONICLE_API_PROCESSES=str(processes))
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # /metrics must sum the processes' counters: they keep them in one shared directory.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chronicle-metrics-")
        uvicorn.run("api.app:create_app_from_env", factory=True, workers=processes, **options)
        return
    from api.app import create_app

    # uvicorn stops on SIGINT/SIGTERM, then raises the signal again to the handler it found;
    # with this one in place that ends the wait, and the caller stops the rest and exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, frame: logger.info("stopping on signal %s", number))
    uvicorn.Server(uvicorn.Config(create_app(url, broker=broker, serving=True), **options)).run()


def server_options(host: str, port: int, log_level: str) -> dict[str, Any]:
    """The uvicorn settings every API process runs with (the benches serve with them too).

    uvloop and httptools when installed (`uvicorn[standard]`); uvicorn's access log only at debug.
    """
    return dict(
        host=host, port=port, log_level=log_level, access_log=log_level == "debug", lifespan="on",
        timeout_graceful_shutdown=5,
        log_config=None,  # uvicorn's loggers go through Chronicle's (infrastructure/logs.py)
    )


def serve(
    host: str = typer.Option("127.0.0.1", envvar="CHRONICLE_HOST", help="Interface to listen on."),
    port: int = typer.Option(8000, envvar="CHRONICLE_PORT", help="Port to listen on."),
    log_level: str = typer.Option("warning", envvar="CHRONICLE_LOG_LEVEL"),
    processes: int = typer.Option(0, envvar="CHRONICLE_API_PROCESSES", min=0,
                                  help="API server processes (0: one per core)."),
) -> None:
    """Serve the HTTP API only (workers run elsewhere: `chronicle worker`)."""
    settings = get_settings()
    _refuse_if_running(host, port, None if settings.database_url else settings.chronicle_data_dir)
    url = database_url(settings)
    _serve(url, host, port, "redis" if settings.redis_url else "absent", log_level, processes or _cores())


def _cores() -> int:
    """The cores this process may run on (the default number of API processes)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def up(
    host: str = typer.Option("127.0.0.1", envvar="CHRONICLE_HOST", help="Interface to listen on."),
    port: int = typer.Option(8000, envvar="CHRONICLE_PORT", help="Port to listen on."),
    log_level: str = typer.Option("warning", envvar="CHRONICLE_LOG_LEVEL"),
    worker_threads: int = typer.Option(4, envvar="CHRONICLE_WORKER_THREADS", help="In-process worker threads."),
    processes: int = typer.Option(0, envvar="CHRONICLE_API_PROCESSES", min=0,
                                  help="API server processes with REDIS_URL (0: one per core); else one."),
) -> None:
    """Start Chronicle: store (embedded if no DATABASE_URL), migrations, workers and the API.

    With no REDIS_URL the workers run in this process on an in-memory broker. Ctrl-C stops all.
    """
    from service_layer.keys import create_key, has_admin_key
    from infrastructure.db import create_pool

    settings = get_settings()
    _refuse_if_running(host, port, None if settings.database_url else settings.chronicle_data_dir)
    use_master_key(create=True)
    settings = get_settings()
    url, applied = migrated_database_url(settings)
    _use_database(url)
    _use_seal_key(settings)
    for name in applied:
        console.print(f"applied [bold]{name}[/bold]")
    pool = create_pool(url, settings.model_copy(update={"chronicle_pool_min_size": 1}), name="chronicle-up")
    try:
        if not has_admin_key(pool):
            key, token = create_key(pool, "admin", "admin", actor_id="admin", actor_type="user", created_by="chronicle up")
            from service_layer.operator_events import record_operator_action

            record_operator_action(store(pool), "operator.key_created", f"key:{key.key_id}",
                                   {"role": "admin", "name": "admin"}, actor_id="chronicle up", actor_type="system")
            typer.echo("First start: an admin API key was created. It is shown only this once:")
            typer.echo(f"  CHRONICLE_KEY={token}")
            typer.echo("Try it:")
            typer.echo(
                f"  curl -s -X POST http://{host}:{port}/v1/documents -H 'Authorization: Bearer {token}'"
                " -H 'Content-Type: application/json'"
                """ -d '{"namespace": "demo", "type": "session_context", "title": "Hello", "content": "first"}'"""
            )
        else:
            typer.echo("Admin key exists (create more with `chronicle keys create NAME --role ROLE`).")
    finally:
        pool.close()

    stop_workers = None
    broker = "redis"
    if settings.redis_url:
        typer.echo("REDIS_URL is set: run workers as `chronicle worker` processes.")
    else:
        broker = "in-process"
        stop_workers = _start_in_process_workers(url, worker_threads)
    typer.echo(f"Chronicle API on http://{host}:{port}  (OpenAPI: http://{host}:{port}/openapi.json)", err=False)
    sys.stdout.flush()
    try:
        # In-process workers hear of appends through this process's memory, so the API stays in it.
        _serve(url, host, port, broker, log_level, (processes or _cores()) if stop_workers is None else 1)
    finally:
        if stop_workers is not None:
            stop_workers()
        typer.echo("Chronicle stopped.")


def _refuse_if_running(host: str, port: int, data_dir: str | None) -> None:
    """Exit 1 with a sentence if the port is taken or (embedded) the data folder serves another `up`."""
    from cli.running import port_holder
    from infrastructure.embedded import DataDirInUse, claim_data_dir

    holder = port_holder(host, port)
    if holder is not None:
        typer.echo(f"error: {holder}", err=True)
        raise typer.Exit(1)
    if data_dir is None:
        return
    try:
        claim_data_dir(Path(data_dir).resolve(), f"http://{host}:{port}")
    except DataDirInUse as exc:
        typer.echo(f"error: Chronicle is already running on the data folder {exc.data_dir} ({exc.holder}); "
                   "its embedded PostgreSQL is in use. Stop it first, or start this one with another "
                   "CHRONICLE_DATA_DIR.", err=True)
        raise typer.Exit(1) from None


def _use_database(url: str) -> None:
    """Make `url` the process's DATABASE_URL, so workers and the service find the same store."""
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()


def _use_seal_key(settings: Any) -> None:
    """With no seal key configured, an embedded store's `chronicle up` makes one in its data folder."""
    from cli.log_commands import seal_key_settings

    keyed = seal_key_settings(settings, create=True)
    if keyed.chronicle_seal_key_file and not settings.chronicle_seal_key_file:
        os.environ["CHRONICLE_SEAL_KEY_FILE"] = str(keyed.chronicle_seal_key_file)
        get_settings.cache_clear()
        console.print(f"seal key: {keyed.chronicle_seal_key_file} (keep a copy; the database never holds it)")


def _start_in_process_workers(url: str, threads: int) -> Any:
    """Start the dramatiq workers in this process on the in-memory broker; return a stopper."""
    from workers.inprocess import start_in_process_workers

    _use_database(url)
    return start_in_process_workers(threads)


def worker(
    ctx: typer.Context,
    processes: int = typer.Option(1, "--processes", "-p", min=1, help="Worker processes."),
    threads: int = typer.Option(8, "--threads", "-t", min=1, help="Threads per process."),
) -> None:
    """Start dramatiq worker processes on Chronicle's actors; other options go to dramatiq."""
    from workers.main import run_worker

    settings = get_settings()
    if not settings.redis_url:
        typer.echo("warning: no REDIS_URL; these workers only see their own in-memory broker", err=True)
    _use_database(database_url(settings))
    raise typer.Exit(run_worker(processes, threads, list(ctx.args)) or 0)


# -- keys ------------------------------------------------------------------------------------

@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="A name for the key, e.g. the service that uses it."),
    role: str = typer.Option(..., "--role", "-r", help="writer, reader, auditor, operator, admin or subscriber."),
    actor_id: str | None = typer.Option(None, help="The actor its events name (default: the name)."),
    actor_type: str = typer.Option("service", help="user, agent, service or system."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a key and print its secret token (shown only this once)."""
    from service_layer.keys import create_key
    from service_layer.operator_events import record_operator_action

    actor, kind = operator_actor()
    with cli_pool() as pool:
        try:
            key, token = create_key(pool, name, role, actor_id=actor_id, actor_type=actor_type, created_by=actor)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        record_operator_action(store(pool), "operator.key_created", f"key:{key.key_id}",
                               {"role": role, "name": name}, actor_id=actor, actor_type=kind)
    if as_json:
        echo_json({**key.public(), "token": token})
    else:
        typer.echo(f"created {role} key {key.key_id} ({name})")
        typer.echo(token)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List every key (never their secrets)."""
    from service_layer.keys import list_keys

    with cli_pool() as pool:
        keys = list_keys(pool)
    if as_json:
        echo_json([k.public() for k in keys])
        return
    if not keys:
        typer.echo("none: no API keys yet (create one with `chronicle keys create NAME --role ROLE`)")
        return
    table = Table(title="API keys")
    for column in ("key id", "name", "role", "actor", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.key_id, k.name, k.role, f"{k.actor_type}:{k.actor_id}",
                      k.created_at.strftime("%Y-%m-%d %H:%M"), k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id, as `chronicle keys list` shows it (not the token).")) -> None:
    """Revoke a key: its next request gets 401. Exit 1 if there is no such key or it was already revoked.

    It takes the key id only: a token (chr_<key id>_<secret>) is refused with its key id named,
    so that secrets are not typed into shells and their histories as a habit.
    """
    from service_layer.keys import KEY_FORMAT, get_key, revoke_key
    from service_layer.operator_events import record_operator_action

    token = KEY_FORMAT.match(key_id.strip())
    if token:
        typer.echo(f"error: that is a key's token, not its key id: give the key id (see `chronicle keys list`), "
                   f"not the token; this token's key id is {token.group(1)}", err=True)
        raise typer.Exit(2)
    actor, kind = operator_actor()
    with cli_pool() as pool:
        before = get_key(pool, key_id)
        if before is None:
            typer.echo(f"error: no key {key_id!r}: give a key id as `chronicle keys list` shows it", err=True)
            raise typer.Exit(1)
        if before.revoked_at is not None:
            typer.echo(f"error: key {key_id} ({before.name}) was already revoked at "
                       f"{before.revoked_at.isoformat(timespec='seconds')}", err=True)
            raise typer.Exit(1)
        key = revoke_key(pool, key_id)
        record_operator_action(store(pool), "operator.key_revoked", f"key:{key.key_id}", {"name": key.name},
                               actor_id=actor, actor_type=kind)
    typer.echo(f"revoked {key.key_id} ({key.name})")


# -- history ---------------------------------------------------------------------------------

def history(
    stream: str = typer.Argument(..., help="A stream id, e.g. a document id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    limit: int = typer.Option(1000, min=1, max=100_000),
) -> None:
    """A stream's events: version, type, who, when, and what changed."""
    from infrastructure.log_keys import of_stream
    from service_layer.event_log import events_json

    with cli_pool() as pool, pool.connection() as conn:
        rows = conn.execute(
            f"SELECT * FROM events WHERE {of_stream()} ORDER BY version LIMIT %s", (stream, stream, limit)
        ).fetchall()
        events = events_json(conn, rows)
    if not rows:
        typer.echo(f"error: no stream {stream!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        echo_json(events)
        return
    table = Table(title=f"history of {stream}")
    for column in ("version", "type", "actor", "session", "recorded at", "payload"):
        table.add_column(column, overflow="fold")
    for e in events:
        meta = e["metadata"] or {}
        payload = json.dumps(e["payload"], default=str)
        table.add_row(
            str(e["stream_version"]), e["type"], f"{meta.get('actor_type', '')}:{meta.get('actor_id', '')}",
            meta.get("session_id") or "", e["recorded_at"][:19], payload if len(payload) < 80 else payload[:77] + "...",
        )
    console.print(table)


def register_commands(app: typer.Typer) -> None:
    """Add these commands to the `chronicle` app."""
    app.command()(up)
    app.command()(serve)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(worker)
    app.command()(history)
    from cli.demo import demo

    app.command()(demo)
    from cli.log_commands import register_log_commands

    register_log_commands(app)
    app.add_typer(keys_app, name="keys")
    app.add_typer(projections_app, name="projections")
    app.add_typer(dead_letters_app, name="dead-letters")
    from cli.indexes import indexes_app, prune

    app.add_typer(indexes_app, name="indexes")
    app.command()(prune)
    from cli.archive_commands import archive_app

    app.add_typer(archive_app, name="archive")
    from cli.group_commands import groups_app

    app.add_typer(groups_app, name="groups")
