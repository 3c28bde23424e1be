"""Soak: mixed commands from many clients over HTTP for a bounded time, while

- a worker process is SIGKILLed (its whole process group) and restarted at random,
- Redis is restarted (our own redis-server on a free port, never the shared one),
- a projection is rebuilt from the API mid-run.

At the end every acknowledged command is in the log exactly once, every stream's versions
are contiguous, and every snapshot table equals a fresh rebuild from the log.

`--soak-seconds` (or CHRONICLE_SOAK_SECONDS) sets the length; the default suits CI.
"""

from __future__ import annotations

import json
import os

import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from projections.jobs import CRASHED
from tests.api.conftest import CHRONICLE, chronicle_env
from tests.projections.conftest import dump_tables
from tests.reliability.conftest import (
    Process,
    RedisServer,
    clients_for,
    create_keys,
    make_pool,
    start_api,
    wait_projected,
)
from tests.reliability.load import Load, assert_acknowledged_exactly_once, assert_streams_contiguous

WORKERS = 2


@pytest.mark.soak
@pytest.mark.timeout(0)  # bounded by --soak-seconds plus fixed waits, checked below
def test_soak_with_worker_kills_redis_restart_and_rebuild(
    rel_database_url: str, own_redis: RedisServer, tmp_path: Path, soak_seconds: float,
) -> None:
    url = rel_database_url
    tokens = create_keys(url, ("writer", "operator"))
    namespace = f"chronicle-soak-{uuid.uuid4().hex[:8]}"
    common = dict(REDIS_URL=own_redis.url, CHRONICLE_BROKER_NAMESPACE=namespace, CHRONICLE_TICK_SECONDS="1")
    base, api = start_api(url, tmp_path, command="serve", **common)
    worker_env = chronicle_env(DATABASE_URL=url, **common)
    workers = [Process([CHRONICLE, "worker", "--processes", "1", "--threads", "4"], worker_env,
                       tmp_path / f"worker-{n}.log").start() for n in range(WORKERS)]
    clients = clients_for(base, tokens)
    operator = clients["operator"]
    rng = random.Random(7)
    load = Load(base, tokens["writer"], clients=12, seed=11)
    events: list[str] = []
    started = time.monotonic()
    try:
        load.start()
        end = started + soak_seconds
        redis_at = started + soak_seconds * 0.3
        rebuild_at = started + soak_seconds * 0.5
        next_kill = started + rng.uniform(1, 3)
        redis_done = rebuild_done = False
        kills = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_kill:
                victim = rng.randrange(WORKERS) if kills >= WORKERS else kills  # each one at least once
                kills += 1
                workers[victim].kill()
                events.append(f"{now - started:5.1f}s SIGKILL worker {victim}")
                time.sleep(rng.uniform(0.1, 1.0))
                workers[victim].start()
                next_kill = time.monotonic() + rng.uniform(1.5, 4)
            if not redis_done and now >= redis_at:
                own_redis.restart(down_seconds=1.5)
                events.append(f"{now - started:5.1f}s restarted Redis")
                redis_done = True
            if not rebuild_done and now >= rebuild_at:
                response = operator.post("/v1/projections/documents/rebuild")
                assert response.status_code == 202, response.text
                events.append(f"{now - started:5.1f}s rebuild documents started")
                rebuild_done = True
            time.sleep(0.1)
        report = load.stop()
        # The last killed worker may be down: make sure every worker runs for the catch-up.
        for worker in workers:
            if not worker.alive:
                worker.start()
        assert redis_done and rebuild_done and any("SIGKILL" in e for e in events), events

        assert api.alive, api.tail()
        assert not report.server_errors, report.server_errors[:5]
        assert report.abandoned == 0, report.statuses
        assert len(report.acks) > 50, report.statuses
        assert_acknowledged_exactly_once(url, report.acks)
        streams = assert_streams_contiguous(url)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rebuild = operator.get("/v1/projections/documents/rebuild").json()
            if rebuild["state"] == "crashed" or rebuild["error"] == CRASHED:
                # Its worker was SIGKILLed: the live tables served on; an operator starts it again.
                assert operator.post("/v1/projections/documents/rebuild").status_code == 202
                events.append("rebuild documents crashed with its worker; started again")
            elif rebuild["state"] not in ("requested", "running"):
                break
            time.sleep(0.2)
        assert rebuild["state"] == "done", rebuild
        wait_projected(operator, timeout=90)
    finally:
        load.stop_event.set()
        for worker in workers:
            worker.stop()
        for client in clients.values():
            client.close()
        api.stop()

    # The operator's proof: `chronicle projections verify` finds no differing row.
    verified = subprocess.run([str(Path(sys.executable).with_name("chronicle")), "projections", "verify", "--json"],
                              env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert all(r["differing_rows"] == 0 for r in json.loads(verified.stdout)), verified.stdout

    # Every snapshot table equals a fresh rebuild of it from the log.
    from projections.catalog import PROJECTORS
    from projections.rebuild import rebuild as rebuild_projection

    pool = make_pool(url, 4, "reliability-soak")
    try:
        incremental = dump_tables(pool)
        for name in PROJECTORS:
            rebuild_projection(pool, name)
        rebuilt = dump_tables(pool)
    finally:
        pool.close()
    assert sum(len(rows) for rows in incremental.values()) > 0
    for table in incremental:
        assert incremental[table] == rebuilt[table], f"{table}: incremental rows differ from a rebuild"
    print(f"\nsoak {soak_seconds:g}s: {len(report.acks)} acknowledged commands on {streams} streams, "
          f"statuses {report.statuses}, transport errors {report.transport_errors}\n  " + "\n  ".join(events))
