"""Fixtures for the HTTP API tests: a real `chronicle up` process on a database of its own.

The server runs as a subprocess (uvicorn), with its workers in-process (no REDIS_URL).
Keys for every role are created once, straight in the database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import migrated_database_fixture
from tests.support import stop, wait_ready  # noqa: F401 - wait_ready is shared with other test packages

ROOT = Path(__file__).resolve().parents[2]
CHRONICLE = str(Path(sys.executable).parent / "chronicle")
ROLES = ("writer", "reader", "auditor", "operator", "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chronicle_env(**extra: str) -> dict[str, str]:
    """The environment a Chronicle subprocess runs with: ours minus DATABASE_URL/REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(extra)
    return env


api_database_url = migrated_database_fixture(
    "package", "A migrated database for the API tests alone (its event log is ours to assert on).")


@pytest.fixture(scope="package")
def server(api_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `chronicle up` process (API plus in-process workers)."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = chronicle_env(
        DATABASE_URL=api_database_url,
        CHRONICLE_API_MIN_POSITION_WAIT_MS="3000",
        CHRONICLE_API_MAX_BODY_BYTES="300000",
        CHRONICLE_API_MAX_PAGE_SIZE="200",
        CHRONICLE_DATA_DIR=str(tmp_path_factory.mktemp("data")),
    )
    with running_chronicle(env, log, port) as base:
        yield base


@contextmanager
def running_chronicle(env: dict[str, str], log: Path, port: int) -> Iterator[str]:
    """A `chronicle up` process on `port`, output to `log`; its base URL once ready; stopped on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [CHRONICLE, "up", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        stop(proc)
        if os.environ.get("CHRONICLE_SHOW_SERVER_LOG"):
            print(log.read_text())


@pytest.fixture(scope="package")
def api_pool(api_database_url: str):
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    pool = create_pool(api_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=4), name="api-tests")
    yield pool
    pool.close()


@pytest.fixture(scope="package")
def tokens(api_pool) -> dict[str, str]:
    """A live key for every role, by role name."""
    from service_layer.keys import create_key

    return {role: create_key(api_pool, f"test-{role}", role, actor_id=f"svc-{role}")[1] for role in ROLES}


@pytest.fixture(scope="package")
def clients(server: str, tokens: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    """An HTTP client per role, plus "anonymous" with no key."""
    made = {
        role: httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for role, token in tokens.items()
    }
    made["anonymous"] = httpx.Client(base_url=server, timeout=30)
    yield made
    for client in made.values():
        client.close()


def assert_problem(response: httpx.Response, status: int, code: str | None = None, field: str | None = None) -> dict:
    """The response is application/problem+json with this status (and code and field)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and isinstance(body["code"], str) and body["detail"]
    assert "Traceback" not in response.text
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert body["field"] == field, body
    return body
