"""Fixtures for the observability tests: a `chronicle up` logging JSON to a file we read,
and helpers to scrape /metrics and to read JSON log lines.

The API tests' fixtures (database, keys, clients) are reused; `server` is ours, so the
clients talk to a server whose stderr we keep.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import (  # noqa: F401 - fixtures shared with the API tests
    CHRONICLE,
    ROOT,
    api_database_url,
    api_pool,
    chronicle_env,
    clients,
    free_port,
    stop,
    tokens,
    wait_ready,
)


@dataclass
class Process:
    """A Chronicle subprocess, and the file its stderr (its logs) goes to."""

    base: str
    log: Path
    proc: subprocess.Popen


def start(args: list[str], env: dict[str, str], log: Path, *, base: str | None = None) -> Process:
    """Start `chronicle ARGS` with stderr to `log` (stdout to log.stdout); wait for /readyz if `base`."""
    with open(log, "wb") as err, open(log.with_suffix(".stdout"), "wb") as out:
        proc = subprocess.Popen([CHRONICLE, *args], cwd=ROOT, env=env, stdout=out, stderr=err)
    if base is not None:
        try:
            wait_ready(base, proc)
        except Exception:
            stop(proc)
            raise
    return Process(base or "", log, proc)


@pytest.fixture(scope="package")
def api_process(api_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """`chronicle up` (API plus in-process workers) logging JSON at info to a file."""
    port = free_port()
    folder = tmp_path_factory.mktemp("observed")
    env = chronicle_env(
        DATABASE_URL=api_database_url, CHRONICLE_LOG_FORMAT="json", CHRONICLE_LOG_LEVEL="info",
        CHRONICLE_DATA_DIR=str(folder / "data"), CHRONICLE_TICK_SECONDS="1",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = start(["up", "--port", str(port)], env, folder / "up.log", base=f"http://127.0.0.1:{port}")
    try:
        yield process
    finally:
        stop(process.proc)


@pytest.fixture(scope="package")
def server(api_process: Process) -> str:
    """The base URL the shared `clients` fixture talks to."""
    return api_process.base


# -- reading what Chronicle reports ----------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    """Every sample of GET {base}/metrics, by name and labels."""
    response = httpx.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: Any) -> float:
    """The sample with exactly these labels, 0 if absent (a counter not yet incremented)."""
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


def labelled(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called `name`, by its labels."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The log's lines, each parsed as JSON (a line that is not JSON fails the test)."""
    lines = []
    for line in log.read_text().splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{log.name} has a line that is not JSON: {line[:300]}")
    return lines


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
