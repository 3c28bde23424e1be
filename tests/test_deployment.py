"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine here)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from cli.main import app
from infrastructure.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _resolve(argv: list[str]) -> None:
    """Parse argv as the `chronicle` CLI would, failing on an unknown command or option."""
    assert argv[0] == "chronicle", f"{argv} does not run chronicle"
    command = typer.main.get_command(app)
    args = list(argv[1:])
    while hasattr(command, "commands"):  # a group (typer vendors its own click classes)
        name, args = args[0], args[1:]
        assert name in command.commands, f"{argv}: chronicle has no command {name!r}"
        command = command.commands[name]
    command.make_context(command.name, args)  # raises on an unknown option or bad value


def test_resolve_refuses_unknown_commands_and_options():
    with pytest.raises(AssertionError):
        _resolve(["chronicle", "no-such-command"])
    with pytest.raises(Exception, match="bogus"):
        _resolve(["chronicle", "migrate", "--bogus"])


def test_compose_runs_postgres_redis_migrate_api_and_worker():
    services = _compose()["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "worker"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name], f"{name} has no health check"
        assert services[name].get("volumes"), f"{name} has no volume"
    assert services["migrate"]["restart"] == "no"
    # The worker must be scalable: no fixed container name, no published ports.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_every_compose_command_is_a_real_chronicle_command():
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if command is None or not service.get("build"):
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        _resolve(argv)


def test_every_compose_variable_is_one_chronicle_reads():
    known = {name.upper() for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        if not service.get("build"):
            continue
        env = service.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [item.split("=", 1)[0] for item in env]
        unknown = set(names) - known
        assert not unknown, f"{name} sets variables Chronicle does not read: {unknown}"


def test_compose_migrates_as_the_owner_and_runs_as_the_application_login():
    """Only `migrate` holds the owner's URL; the API and the workers use the restricted login."""
    from psycopg import conninfo

    services = _compose()["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    migration_url = services["migrate"]["environment"]["DATABASE_MIGRATION_URL"]
    assert conninfo.conninfo_to_dict(migration_url)["user"] == owner
    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert conninfo.conninfo_to_dict(env["DATABASE_URL"])["user"] != owner, name
        if name != "migrate":
            assert "DATABASE_MIGRATION_URL" not in env, f"{name} must not know the owner's login"


def test_dockerfile_is_slim_non_root_and_installs_from_pyproject():
    text = (ROOT / "Dockerfile").read_text()
    assert "-slim" in text.splitlines()[1] or any(
        line.startswith("FROM") and "-slim" in line for line in text.splitlines()
    )
    assert any(line.startswith("USER ") and "root" not in line for line in text.splitlines())
    assert "pip install ." in text and "COPY pyproject.toml" in text
