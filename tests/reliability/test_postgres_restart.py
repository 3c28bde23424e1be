"""PostgreSQL restarts under load (a throwaway cluster of this test's own, never the shared one).

While it is down, commands fail cleanly: 503 with Retry-After, as problem+json, never a 500.
Clients retry with their Idempotency-Key, and no acknowledged command is lost or doubled.
The same server process recovers by itself (its pool reconnects), and the in-process
workers resume from their checkpoints rather than from the start of the log.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from infrastructure.migrations import migrate
from tests.reliability.conftest import ThrowawayPostgres, clients_for, create_keys, start_api, wait_projected
from tests.reliability.load import Load, assert_acknowledged_exactly_once, assert_streams_contiguous


def checkpoints(url: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return {(p, k): pos for p, k, pos in
                conn.execute("SELECT projection, partition, position FROM projection_checkpoint").fetchall()}


@pytest.mark.soak
@pytest.mark.timeout(240)
def test_commands_fail_cleanly_and_nothing_is_lost_across_a_postgres_restart(
    throwaway_postgres: ThrowawayPostgres, tmp_path: Path,
) -> None:
    pg = throwaway_postgres
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE chronicle")
    url = pg.url.rsplit("/", 1)[0] + "/chronicle"
    migrate(url)
    tokens = create_keys(url, ("writer", "operator", "reader"))
    base, server = start_api(url, tmp_path, CHRONICLE_POOL_TIMEOUT_SECONDS="2")
    clients = clients_for(base, tokens)
    load = Load(base, tokens["writer"], clients=6, seed=5)
    try:  # whatever fails, the server stops (the outer finally)
        try:
            load.start()
            time.sleep(3)
            wait_projected(clients["operator"], timeout=30, moving_only=True)  # workers run and checkpoint
            before = checkpoints(url)
            assert before and max(before.values()) > 0

            # The crash: no shutdown checkpoint, every connection cut.
            pg.stop("immediate")
            down_started = time.monotonic()
            outage = clients["reader"].get("/v1/documents")
            assert outage.status_code == 503, outage.text
            assert outage.headers["content-type"].startswith("application/problem+json")
            assert outage.headers["retry-after"] and outage.json()["code"] == "database_unavailable"
            assert time.monotonic() - down_started < 10, "a request waited too long for a dead database"
            time.sleep(3)
            pg.start()

            # The same process recovers without being restarted; writes resume.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if clients["reader"].get("/v1/documents").status_code == 200:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"the API did not recover after PostgreSQL came back:\n{server.tail()}")
            acked_before = len(load.report.acks)
            time.sleep(4)
            report = load.stop()
            assert len(report.acks) > acked_before, "no command was acknowledged after the restart"
        finally:
            load.stop_event.set()

        assert server.alive, server.tail()
        assert not report.server_errors, report.server_errors[:5]
        assert report.unavailable, "the outage produced no 503"
        for response in report.unavailable:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert int(response.headers["retry-after"]) >= 1
            assert "Traceback" not in response.text
        assert report.abandoned == 0, report
        assert_acknowledged_exactly_once(url, report.acks)
        assert_streams_contiguous(url)

        # Workers resume from their checkpoints (never from 0) and catch up with the log.
        status = wait_projected(clients["operator"], timeout=60)
        after = checkpoints(url)
        for key, position in before.items():
            assert after.get(key, 0) >= position, (key, position, after.get(key))
        with psycopg.connect(url) as conn:
            projected = {r[0] for r in conn.execute("SELECT document_id::text FROM document").fetchall()}
        created = {a.stream_id for a in report.acks if a.path == "/v1/documents" and a.method == "POST"}
        assert created <= projected, (len(created - projected), status)
        print(f"statuses {report.statuses}, acks {len(report.acks)}, transport errors {report.transport_errors}")
    finally:
        for client in clients.values():
            client.close()
        server.stop()
