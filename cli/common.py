"""What every `chronicle` command shares: the command groups, the store's URL and a pool on it,
the operator the CLI acts as, and JSON and table output."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from infrastructure.config import Settings, get_settings
from infrastructure.database_roles import EMBEDDED_APP_LOGIN, StoreUrls, configured_urls, ensure_app_login, with_login

console = Console()
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
projections_app = typer.Typer(help="Projection status, rebuild and replay.", no_args_is_help=True)
dead_letters_app = typer.Typer(help="Parked events: list, retry, skip.", no_args_is_help=True)


@contextmanager
def cli_pool() -> Iterator[Any]:
    """A small pool on the configured store (embedded if DATABASE_URL is unset), migrated."""
    from infrastructure.db import create_pool

    use_master_key(create=False)
    settings = get_settings().model_copy(update={"chronicle_pool_min_size": 1, "chronicle_pool_max_size": 2})
    url, _ = migrated_database_url(settings)
    pool = create_pool(url, settings, name="chronicle-cli")
    try:
        yield pool
    finally:
        pool.close()


def use_master_key(*, create: bool) -> None:
    """Without CHRONICLE_MASTER_KEY, use the one in the data folder (`create`: make it first).

    `chronicle up` makes it on its first start; the other commands run in that folder find it.
    """
    settings = get_settings()
    if settings.chronicle_master_key:
        return
    from infrastructure.personal_data import keyring, new_master_key

    path = Path(settings.chronicle_data_dir) / "master.key"
    if not path.exists():
        if not create:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_master_key() + "\n")
        typer.echo(f"made a master key for personal data in {path} (keep it, and back it up apart from the data)",
                   err=True)
    os.environ["CHRONICLE_MASTER_KEY"] = path.read_text().strip()
    get_settings.cache_clear()
    keyring.cache_clear()


def store(pool: Any) -> Any:
    import service_layer.operator_events  # noqa: F401
    from infrastructure.event_store import EventStore

    return EventStore(pool)


def operator_actor() -> tuple[str, str]:
    """Who runs this CLI: $CHRONICLE_ACTOR, else the OS user (recorded in operator events)."""
    actor = os.environ.get("CHRONICLE_ACTOR") or f"cli:{os.environ.get('USER') or 'unknown'}"
    return actor, "user"


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str, indent=2))


def store_urls(settings: Settings) -> StoreUrls:
    """The owner's and the application's URLs: the settings', else an embedded PostgreSQL's.

    The embedded server's superuser migrates; everything else runs as its login chronicle_login.
    """
    urls = configured_urls(settings)
    if urls is not None:
        return urls
    from infrastructure.embedded import start_embedded_postgres

    from cli.output import err_console

    owner = start_embedded_postgres(Path(settings.chronicle_data_dir).resolve() / "pgdata")
    err_console.print(f"[dim]No DATABASE_URL: embedded PostgreSQL in {settings.chronicle_data_dir}/pgdata[/dim]")
    return StoreUrls(owner, with_login(owner, EMBEDDED_APP_LOGIN))


def database_url(settings: Settings) -> str:
    """The application login's URL: DATABASE_URL, or the embedded store's chronicle_login."""
    urls = store_urls(settings)
    if not settings.database_url:
        ensure_app_login(urls.migration, urls.app)
    return urls.app


def migrated_database_url(settings: Settings) -> tuple[str, list[str]]:
    """Apply pending migrations as the owner; the application login's URL and the names applied.

    The application login is made a member of chronicle_app when the owner may do so.
    """
    from infrastructure.migrations import migrate

    urls = store_urls(settings)
    applied = migrate(urls.migration)
    ensure_app_login(urls.migration, urls.app)
    return urls.app, applied
