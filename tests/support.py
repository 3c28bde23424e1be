"""Small helpers the tests share: threads started together, server processes started and stopped,
and other clients' sessions holding the database (advisory locks, an append left open)."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
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
    """Stop a server we started, by its own process id: SIGTERM, then SIGKILL if it lingers.

    One that has already exited is only reaped.
    """
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def foreign_locks_on_the_next_position(url: str) -> Iterator[int]:
    """Hold, as another client of the database would (a psql prompt, a job queue), advisory locks
    on a small key, on the next position's old key and on Chronicle's own next key; yields that position.

    What appends must neither wait for nor be hidden by; released when the block ends.
    """
    with psycopg.connect(url, autocommit=True) as psql:
        nxt = psql.execute(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM events_position_seq"
        ).fetchone()[0]
        psql.execute("SELECT pg_advisory_lock(1), pg_advisory_lock(%s), pg_advisory_lock(log_lock_key(%s))",
                     (nxt, nxt))
        yield nxt


class HeldAppend:
    """An append whose transaction stays open, on a thread of its own, until release():
    another client holding the log back at its position (`pid` is its backend)."""

    def __init__(self, pool: Any, actor_id: str) -> None:
        self.pool, self.actor_id = pool, actor_id
        self.pid: int | None = None
        self.position: int | None = None
        self._holding, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def start(self) -> "HeldAppend":
        """Append and wait until the transaction holds its position (at most 10 s)."""
        self._thread.start()
        assert self._holding.wait(10), "the held append did not start"
        return self

    def _hold(self) -> None:
        import service_layer.operator_events  # noqa: F401 - registers the operator.* type appended
        from infrastructure.event_store import ANY, EventStore, NewEvent

        store = EventStore(self.pool)
        with store.transaction() as conn:
            result = store.append_on(conn, f"operator-hold-{uuid.uuid4().hex[:8]}", ANY,
                                     [NewEvent("operator.key_created", {"target": "hold", "details": {}})],
                                     {"actor_id": self.actor_id}, stream_type="operator")
            self.pid, self.position = conn.info.backend_pid, result.position
            self._holding.set()
            self._release.wait(60)

    def release(self) -> bool:
        """Commit the held append; whether its thread has finished (it is given 10 s)."""
        self._release.set()
        if self._thread.is_alive():
            self._thread.join(10)
        return not self._thread.is_alive()


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
