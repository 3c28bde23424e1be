"""Quiet, scriptable output on the newcomer's path: embedded PostgreSQL (no DATABASE_URL).

One `chronicle up` on a fresh data folder serves the module; the CLI commands run as
subprocesses on the same folder (they reuse its embedded PostgreSQL). stdout carries only
data, so `--json` pipes into jq; library chatter (initdb, pg_ctl, httpx) shows only with
--verbose; a second `up` on the same port or data folder says Chronicle is already running.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import chronicle_env, free_port
from tests.cli.conftest import CHRONICLE
from tests.cli.test_newcomer import Up

NOISE = re.compile(r'initdb|pg_ctl|\[pgserver\]|"logger": ?"pgserver"|PG_VERSION|HTTP Request:')
# A line of the embedded PostgreSQL's logger, as text (a terminal) or as JSON (a pipe, as here).
PGSERVER_LINE = re.compile(r'\[pgserver\]|"logger": ?"pgserver"')


@dataclass
class Embedded:
    folder: Path
    port: int
    up: Up
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return chronicle_env(CHRONICLE_DATA_DIR=str(self.folder / "data"), COLUMNS="200", **extra)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([CHRONICLE, *args], cwd=self.folder, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def pipe(self, args: str, into: str) -> subprocess.CompletedProcess:
        """`chronicle ARGS | INTO` in bash with pipefail: fails if either side does."""
        line = f"set -o pipefail; {shlex.quote(CHRONICLE)} {args} | {into}"
        return subprocess.run(["bash", "-c", line], cwd=self.folder, env=self.env(), capture_output=True, text=True,
                              timeout=120)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    folder = tmp_path_factory.mktemp("quiet")
    port = free_port()
    up = Up(folder, port)
    try:
        up.wait_ready()
        token = re.search(r"CHRONICLE_KEY=(chr_\S+)", up.output).group(1)
        yield Embedded(folder, port, up, token)
    finally:
        assert up.interrupt() == 0, up.output


def test_first_up_shows_the_key_and_the_address_and_no_initdb(embedded: Embedded):
    output = embedded.up.output
    assert f"Chronicle API on http://127.0.0.1:{embedded.port}" in output
    assert "CHRONICLE_KEY=chr_" in output
    assert not NOISE.search(output), output
    kept = (embedded.folder / "data" / "embedded-postgres.log").read_text()
    assert "initdb" in kept and "pg_ctl" in kept  # kept for when something goes wrong


def test_status_and_history_json_pipe_into_jq(embedded: Embedded):
    status = embedded.pipe("status --json", "jq -c '{events, pending_migrations}'")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pending_migrations"] == []
    assert "embedded PostgreSQL" in status.stderr and not NOISE.search(status.stderr), status.stderr

    created = httpx.post(f"{embedded.base}/v1/documents", headers={"Authorization": f"Bearer {embedded.token}"},
                         json={"namespace": "quiet", "type": "brief", "title": "Hi", "content": "one"})
    assert created.status_code == 201, created.text
    stream = created.json()["stream_id"]
    history = embedded.pipe(f"history {stream} --json", "jq -r '.[].type'")
    assert history.returncode == 0, history.stderr
    assert history.stdout.split() == ["document.created"]

    for args in (("status", "--json"), ("history", stream, "--json"), ("keys", "list", "--json"),
                 ("projections", "status", "--json"), ("dead-letters", "list", "--json"),
                 ("projections", "verify", "documents", "--json")):
        result = embedded.run(*args)
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)  # nothing but the JSON on stdout


def test_library_lines_only_with_verbose(embedded: Embedded):
    quiet = embedded.run("status")
    assert quiet.returncode == 0 and not NOISE.search(quiet.stdout + quiet.stderr), quiet.stderr
    verbose = embedded.run("--verbose", "status")
    assert verbose.returncode == 0 and PGSERVER_LINE.search(verbose.stderr), verbose.stderr
    assert not PGSERVER_LINE.search(verbose.stdout)


@pytest.mark.parametrize("verbose", [False, True])
def test_a_fresh_folder_shows_its_set_up_only_with_verbose(tmp_path: Path, verbose: bool):
    env = chronicle_env(CHRONICLE_DATA_DIR=str(tmp_path / "data"))
    args = [CHRONICLE, *(["--verbose"] if verbose else []), "status", "--json"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "0001_event_store.sql" in json.loads(result.stdout)["pending_migrations"]
    assert ("bin/initdb" in result.stderr) is verbose, result.stderr
    assert bool(NOISE.search(result.stderr.replace(str(tmp_path), ""))) is verbose, result.stderr
    assert "bin/initdb" in (tmp_path / "data" / "embedded-postgres.log").read_text()


def test_demo_tells_its_story_without_request_lines(embedded: Embedded):
    story = embedded.run("demo", "--url", embedded.base, "--key", embedded.token)
    assert story.returncode == 0, story.stderr
    assert "Demo workspace built" in story.stdout
    assert not NOISE.search(story.stdout + story.stderr), story.stdout + story.stderr

    verbose = embedded.pipe(f"--verbose demo --url {embedded.base} --key {embedded.token} --json", "jq -r .chain_id")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout.strip() == json.loads(verbose.stdout.strip().join('""'))  # one id, nothing else
    assert "HTTP Request:" in verbose.stderr and "Demo workspace built" in verbose.stderr


def test_a_second_up_says_chronicle_is_already_running(embedded: Embedded):
    same_port = embedded.run("up", "--port", str(embedded.port), timeout=60)
    assert same_port.returncode == 1, same_port
    assert f"Chronicle is already running on http://127.0.0.1:{embedded.port}" in same_port.stderr
    assert "address already in use" not in same_port.stdout + same_port.stderr
    assert "Chronicle API on" not in same_port.stdout

    same_folder = embedded.run("up", "--port", str(free_port()), timeout=60)
    assert same_folder.returncode == 1, same_folder
    assert "Chronicle is already running on the data folder" in same_folder.stderr
    assert f"http://127.0.0.1:{embedded.port}" in same_folder.stderr  # it names the running one
    assert httpx.get(f"{embedded.base}/readyz").status_code == 200  # the first one is untouched


def test_up_on_a_port_another_program_holds(tmp_path: Path):
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run([CHRONICLE, "up", "--port", str(port)], cwd=tmp_path, capture_output=True, text=True,
                                env=chronicle_env(CHRONICLE_DATA_DIR=str(tmp_path / "data")), timeout=60)
    assert result.returncode == 1, result
    assert f"127.0.0.1:{port} is already in use by another program (not Chronicle)" in result.stderr
    assert not (tmp_path / "data" / "pgdata").exists()  # refused before starting anything
