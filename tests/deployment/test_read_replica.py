"""Reads from a real streaming replica (DATABASE_READ_URL), started by the tests.

A primary (initdb) and its replica (pg_basebackup -R) run from the local PostgreSQL 15 binaries
on free ports. Pausing the replica's WAL replay makes the two differ on purpose: what the
replica answers then shows where a read went.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.migrations import migrate
from infrastructure.replica import FALLBACK_HEADER, SOURCE_HEADER, RequestReads
from service_layer.bootstrap import build_read_replica
from tests.api.conftest import chronicle_env, running_chronicle
from tests.deployment.servers import PG_BIN, Cluster, free_port, primary_and_replica

DB = "chronicle"
WAIT_MS = 6000


def _replay(replica: Cluster, on: bool) -> None:
    """Pause or resume the replica's WAL replay."""
    with psycopg.connect(replica.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()" if on else "SELECT pg_wal_replay_pause()")


def _eventually(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    if not (PG_BIN / "pg_basebackup").exists():
        pytest.skip("needs the PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin")
    with primary_and_replica() as (primary, replica):
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        migrate(primary.url(DB))

        def replicated() -> bool:
            try:
                with psycopg.connect(replica.url(DB)) as conn:
                    return conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()[0]
            except psycopg.OperationalError:
                return False

        _eventually(replicated)
        yield primary, replica


@pytest.fixture(scope="module")
def client(clusters: tuple[Cluster, Cluster], tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A writer-and-auditor's client of `chronicle up` on the primary, reading from the replica."""
    from service_layer.keys import create_key

    primary, replica = clusters
    pool = create_pool(primary.url(DB), Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1))
    try:
        token = create_key(pool, "admin", "admin", actor_id="svc")[1]
    finally:
        pool.close()
    folder = tmp_path_factory.mktemp("replica-server")
    env = chronicle_env(DATABASE_URL=primary.url(DB), DATABASE_READ_URL=replica.url(DB),
                        CHRONICLE_API_MIN_POSITION_WAIT_MS=str(WAIT_MS), CHRONICLE_DATA_DIR=str(folder / "data"))
    with running_chronicle(env, folder / "server.log", free_port()) as base, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as made:
        yield made


def _create(client: httpx.Client, title: str) -> tuple[str, int]:
    created = client.post("/v1/documents", json={"namespace": "replica", "type": "note", "title": title,
                                                  "content": "v1"})
    assert created.status_code == 201, created.text
    return created.json()["stream_id"], created.json()["position"]


def _replica_caught_up(primary: Cluster, replica: Cluster) -> bool:
    """Whether the replica has replayed everything the primary has written so far."""
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    with psycopg.connect(replica.url(), autocommit=True) as conn:
        return conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]


def _projected_on_primary(primary: Cluster, document_id: str) -> bool:
    with psycopg.connect(primary.url(DB)) as conn:
        return conn.execute("SELECT 1 FROM document WHERE document_id = %s", (document_id,)).fetchone() is not None


def test_the_read_pool_is_the_replica(clusters: tuple[Cluster, Cluster]) -> None:
    """bootstrap's second pool connects to a server in recovery; the primary's does not."""
    primary, replica = clusters
    settings = Settings(database_read_url=replica.url(DB), chronicle_pool_min_size=1, chronicle_pool_max_size=2)
    pool = create_pool(primary.url(DB), settings)
    read = build_read_replica(pool, settings)
    try:
        with RequestReads(read).connection() as conn:
            assert conn.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"] is True
        with pool.connection() as conn:
            assert conn.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"] is False
        assert build_read_replica(pool, Settings()) is None
    finally:
        read.close()
        pool.close()


def test_reads_come_from_the_replica_and_min_position_waits_for_its_replay(
        clusters: tuple[Cluster, Cluster], client: httpx.Client) -> None:
    """With replay paused, a document projected on the primary is not found by a read (it went to
    the replica); with ?min_position= the read waits until replay resumes, then answers from the replica."""
    primary, replica = clusters
    assert client.get("/v1/events", params={"limit": 1}).status_code == 200  # the log's bound as of now
    _eventually(lambda: _replica_caught_up(primary, replica))
    _replay(replica, on=False)
    try:
        document_id, position = _create(client, "paused")  # a write: the primary takes it
        _eventually(lambda: _projected_on_primary(primary, document_id))
        stale = client.get(f"/v1/documents/{document_id}")
        assert stale.status_code == 404, stale.text
        assert stale.headers[SOURCE_HEADER] == "replica" and FALLBACK_HEADER not in stale.headers
        # The log is listed up to a safe position the replica has replayed: one from before the pause.
        audit_stale = client.get("/v1/events", params={"stream": document_id})
        assert audit_stale.json()["events"] == [] and audit_stale.headers[SOURCE_HEADER] == "replica"
        assert int(audit_stale.headers["X-Chronicle-Safe-Position"]) < position
    finally:
        threading.Timer(0.3, _replay, (replica, True)).start()
    read = client.get(f"/v1/documents/{document_id}", params={"min_position": position})
    assert read.status_code == 200, read.text
    assert read.json()["title"] == "paused"
    assert read.headers[SOURCE_HEADER] == "replica" and FALLBACK_HEADER not in read.headers
    audit = client.get("/v1/events", params={"stream": document_id, "min_position": position})
    assert [e["position"] for e in audit.json()["events"]] == [position]
    assert audit.headers[SOURCE_HEADER] == "replica"
    assert int(audit.headers["X-Chronicle-Safe-Position"]) >= position


def test_a_replica_still_behind_after_the_wait_leaves_the_read_to_the_primary(
        clusters: tuple[Cluster, Cluster], client: httpx.Client) -> None:
    """Replay stays paused past CHRONICLE_API_MIN_POSITION_WAIT_MS: the primary answers, and says why."""
    _, replica = clusters
    _replay(replica, on=False)
    try:
        document_id, position = _create(client, "behind")
        read = client.get(f"/v1/documents/{document_id}", params={"min_position": position})
        assert read.status_code == 200, read.text
        assert (read.headers[SOURCE_HEADER], read.headers[FALLBACK_HEADER]) == ("primary", "replica_behind")
        audit = client.get("/v1/events", params={"stream": document_id, "min_position": position})
        assert [e["position"] for e in audit.json()["events"]] == [position]
        assert (audit.headers[SOURCE_HEADER], audit.headers[FALLBACK_HEADER]) == ("primary", "replica_behind")
    finally:
        _replay(replica, on=True)


def test_a_stopped_replica_leaves_reads_to_the_primary(
        clusters: tuple[Cluster, Cluster], client: httpx.Client) -> None:
    """The replica's server stops: reads (and audit) answer from the primary, saying so; writes go on."""
    _, replica = clusters
    replica.stop()
    try:
        document_id, position = _create(client, "replica down")
        read = client.get(f"/v1/documents/{document_id}", params={"min_position": position})
        assert read.status_code == 200, read.text
        assert (read.headers[SOURCE_HEADER], read.headers[FALLBACK_HEADER]) == ("primary", "replica_unavailable")
        audit = client.get("/v1/events", params={"stream": document_id})
        assert audit.status_code == 200 and [e["position"] for e in audit.json()["events"]] == [position]
        assert audit.headers[SOURCE_HEADER] == "primary"
    finally:
        replica.start()
