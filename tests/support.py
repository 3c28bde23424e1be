"""Small helpers the tests share: threads started together, and server processes started and stopped."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis


def run_threads(targets: list[Callable[[], object]], timeout: float = 120) -> None:
    """Start every target on its own thread at the same moment, wait for all, re-raise the first failure.

    A barrier lines the threads up, so that they race as the test means them to.
    """
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def guard(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised below on the test thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guard(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60, output: Callable[[], str] = str) -> None:
    """Wait until the server at `base` answers /readyz with 200.

    Fails at once if the process exits, with whatever `output()` gives.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}\n{output()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not become ready\n{output()}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys a test made under its own prefix; a Redis that is gone has none to delete."""
    try:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    except redis.RedisError:
        pass


def park_document_event(conn: Any, newest: bool, attempts: int = 3) -> tuple[int, dict[str, Any]]:
    """Park a document event in the documents projection, as the engine parks one; its dead letter id and event.

    The newest document event of the log, or the oldest.
    """
    event = conn.execute(
        "SELECT position, event_id, stream_id, type FROM events WHERE stream_type = 'document'"
        f" ORDER BY position {'DESC' if newest else 'ASC'} LIMIT 1"
    ).fetchone()
    dead_id = conn.execute(
        "INSERT INTO dead_letter (projection, partition, position, event_id, stream_id, type, error, attempts)"
        " VALUES ('documents', 0, %s, %s, %s, %s, 'boom', %s) RETURNING id",
        (event["position"], event["event_id"], event["stream_id"], event["type"], attempts),
    ).fetchone()["id"]
    return dead_id, event


def workspace_on(database_url: str, snapshot_interval: int, pool_max_size: int = 4) -> Any:
    """The application service on Chronicle's PostgreSQL persistence module, for a test database."""
    from service_layer.workspace import Workspace

    env = {
        "PERSISTENCE_MODULE": "infrastructure.persistence",
        "DATABASE_URL": database_url,
        "CHRONICLE_POOL_MIN_SIZE": "1",
        "CHRONICLE_POOL_MAX_SIZE": str(pool_max_size),
    }
    return Workspace(env=env, snapshot_interval=snapshot_interval)
