"""Fixtures for worker tests: real Redis with a namespace per test, worker subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.projections.conftest import proj_pool, store  # noqa: F401 - shared fixtures
from tests.support import forget_redis_keys

ROOT = Path(__file__).resolve().parents[2]
SHARED_REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """A `dramatiq workers.actors` process group, started and SIGKILLed at will."""

    def __init__(self, database_url: str, redis_url: str, namespace: str, tick: str = "0") -> None:
        # No periodic tick unless a test asks for one: a lost wake-up must show.
        self.env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_url,
                        CHRONICLE_BROKER_NAMESPACE=namespace, CHRONICLE_TICK_SECONDS=tick,
                        CHRONICLE_PARTITIONS="4", PYTHONPATH=str(ROOT))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        code = "from workers.main import run_worker; import sys; sys.exit(run_worker(1, 4))"
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=self.env, cwd=ROOT,
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop as `docker stop` does: SIGTERM to the main process only, which passes it on once to its
        worker processes; they finish the messages they hold. (A SIGTERM to the whole group reaches a
        worker process twice, and dramatiq takes the second as "exit now", mid-message.)"""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Redis namespace of this test's own; its keys are deleted afterwards."""
    name = f"chronicle-test-{uuid.uuid4().hex[:10]}"
    yield name
    forget_redis_keys(SHARED_REDIS, name)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[dict]:
    """A redis-server of this test's own on a free port, which the test may stop and start."""
    port = free_port()
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
           "--dir", str(tmp_path)]
    state = {"url": f"redis://127.0.0.1:{port}/0", "proc": None}

    def start():
        state["proc"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)

    def stop():
        if state["proc"] and state["proc"].poll() is None:
            state["proc"].kill()
            state["proc"].wait()

    state["start"], state["stop"] = start, stop
    start()
    yield state
    stop()


def wait_caught_up(pool, timeout: float = 30.0) -> None:
    """Wait until every partition of every projection has no lag."""
    from projections.status import status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = status(pool)
        if rows and all(r.lag_events == 0 for r in rows):
            return
        time.sleep(0.2)
    raise AssertionError(f"projections did not catch up: {[(r.projection, r.partition, r.lag_events) for r in status(pool)]}")
