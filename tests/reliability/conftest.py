"""Fixtures for the reliability suite: real server processes, our own Redis and PostgreSQL.

Everything here listens on 127.0.0.1 only and is stopped (or restored) afterwards. The
shared PostgreSQL on 5432 and the shared Redis on 6379 are never stopped: tests that
restart a server start a throwaway one of their own on a free port.

The soak runs for `--soak-seconds` (default 20). The option is registered here, so pass
it with this folder on the command line: `pytest tests/reliability --soak-seconds 600`
(or set CHRONICLE_SOAK_SECONDS, which works from anywhere).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import CHRONICLE, ROLES, chronicle_env, free_port, wait_ready
from tests.conftest import migrated_database_fixture

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOAK_SECONDS = 20.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds", action="store", type=float, default=None,
        help=f"how long the soak test runs (default {DEFAULT_SOAK_SECONDS:g}, or CHRONICLE_SOAK_SECONDS)",
    )


@pytest.fixture(scope="session")
def soak_seconds(request: pytest.FixtureRequest) -> float:
    value = request.config.getoption("--soak-seconds", default=None)
    if value is None:
        value = float(os.environ.get("CHRONICLE_SOAK_SECONDS", DEFAULT_SOAK_SECONDS))
    return float(value)


# -- databases -------------------------------------------------------------------------------

rel_database_url = migrated_database_fixture("function", "A migrated database of this test's own, dropped after it.")


def make_pool(url: str, size: int = 4, name: str = "reliability-tests"):
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    return create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=size), name=name)


def create_keys(url: str, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    """A live key per role on the database at `url`, by role name."""
    from service_layer.keys import create_key

    pool = make_pool(url, 2, "reliability-keys")
    try:
        return {role: create_key(pool, f"rel-{role}", role, actor_id=f"rel-{role}")[1] for role in roles}
    finally:
        pool.close()


def count_events(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


# -- processes -------------------------------------------------------------------------------

def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, read from /proc.

    A group outlives its leader when the leader's children do; zombies left to an init
    that does not reap them hold no resources, so they do not count.
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


class Process:
    """A subprocess in its own process group, logged to a file, stopped for sure.

    Every one started is remembered in `Process.started`, so that the suite's fixtures stop
    the ones a test left running, whether the test failed, timed out or was interrupted.
    """

    started: list["Process"] = []

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen | None = None
        self._group_gone = False  # seen empty after the leader exited: its id may belong to others now

    def start(self) -> "Process":
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        self._group_gone = False
        Process.started.append(self)
        return self

    @property
    def group_left(self) -> list[int]:
        """The live processes left in its group (the leader's children included); [] once stopped.

        Once the leader has exited and the group is empty, it is never looked up again: the
        system may give the same id to someone else's process group.
        """
        if self.proc is None or self._group_gone:
            return []
        left = group_members(self.proc.pid)
        self._group_gone = not left and self.proc.poll() is not None
        return left

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, with no chance to clean up."""
        if self.proc is None:
            return
        if self.alive or self.group_left:  # not a group that is gone: its id may be someone else's
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        deadline = time.monotonic() + 5  # the group's other members die as the kernel gets to them
        while self.group_left and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the group, give it `timeout` seconds to shut down, then SIGKILL what is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None or self.group_left:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def stop_all(processes: list[Process]) -> list[str]:
    """Stop each process (its whole group); the command lines of any whose group is still alive."""
    for process in processes:
        if process.alive or process.group_left:
            process.stop(5)
    return [" ".join(p.argv) for p in processes if p.group_left]


@contextmanager
def stopped_afterwards() -> Iterator[None]:
    """Stop every process started inside the block and left running, even when the block fails.

    Raises if a process group survives its stop, so that no server outlives a test unseen.
    """
    first = len(Process.started)
    try:
        yield
    finally:
        survivors = stop_all(Process.started[first:])
    assert not survivors, f"still running after the test: {survivors}"


@pytest.fixture(autouse=True)
def no_process_outlives_its_test() -> Iterator[None]:
    """Every test here runs inside stopped_afterwards: its servers stop whether it passes, fails or times out.

    Processes started by wider fixtures (a module's server) are theirs to stop: they start
    before this fixture's setup, so they do not count.
    """
    with stopped_afterwards():
        yield


def _interrupt_on_sigterm(number: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {number}")


def pytest_configure(config: pytest.Config) -> None:
    """A CI runner that stops the run with SIGTERM gets the same teardown as Ctrl-C: the servers stop."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last sweep when the run ends, however it ends: nothing started here outlives pytest."""
    stop_all(Process.started)
    if signal.getsignal(signal.SIGTERM) is _interrupt_on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_api(database_url: str, log_dir: Path, *, command: str = "up", **env: str) -> tuple[str, Process]:
    """`chronicle up` (in-process workers) or `chronicle serve`; returns its base URL and process."""
    port = free_port()
    settings = {
        "DATABASE_URL": database_url, "CHRONICLE_DATA_DIR": str(log_dir / "data"),
        "CHRONICLE_API_MIN_POSITION_WAIT_MS": "3000", "CHRONICLE_API_MAX_BODY_BYTES": "300000",
        "CHRONICLE_API_MAX_PAGE_SIZE": "200", "CHRONICLE_TICK_SECONDS": "1",
    }
    environment = chronicle_env(**{**settings, **env})
    proc = Process([CHRONICLE, command, "--port", str(port)], environment, log_dir / f"api-{port}.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc.proc)
    except Exception:
        proc.stop()
        raise RuntimeError(f"server did not start:\n{proc.tail()}") from None
    return base, proc


def clients_for(base: str, tokens: dict[str, str], timeout: float = 30) -> dict[str, httpx.Client]:
    made = {role: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=timeout)
            for role, t in tokens.items()}
    made["anonymous"] = httpx.Client(base_url=base, timeout=timeout)
    return made


def wait_projected(client: httpx.Client, timeout: float = 60, *, moving_only: bool = False) -> dict:
    """Wait until every partition of every projection has no lag; return the last status.

    With moving_only, wait only until every projection has checkpointed past 0 (its workers run):
    what a test can ask while a load is still appending, when no lag need ever be zero.
    """
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        try:
            response = client.get("/v1/projections")
            if response.status_code == 200:
                status = response.json()
                if moving_only and all(p["partitions"] and max(q["checkpoint"] for q in p["partitions"]) > 0
                                       for p in status["projections"]):
                    return status
                if not moving_only and all(p["lag_events"] == 0 and p["dead_letters"] == 0 and p["partitions"]
                                           for p in status["projections"]):
                    return status
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"projections did not catch up within {timeout}s: {status}")


# -- our own Redis ---------------------------------------------------------------------------

class RedisServer:
    """A redis-server of this test's own on a free port, with no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.process = Process([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(self.workdir)],
                               dict(os.environ), self.workdir / "redis.log").start()
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(5)
            self.process = None

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- our own PostgreSQL ----------------------------------------------------------------------

class ThrowawayPostgres:
    """A PostgreSQL cluster of this test's own (Debian binaries, as the postgres OS user),
    on a free port in a temp dir, that the test may stop and restart at will."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chronicle-rel-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_postgres: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_postgres, *argv], check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip("no PostgreSQL binaries in /usr/lib/postgresql/15/bin")
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
                        " -c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def running(self) -> bool:
        return self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def destroy(self) -> None:
        if self.data.exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()
