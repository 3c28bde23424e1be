"""Chronicle behind Debian's PgBouncer in transaction mode, started by the tests.

In transaction mode a client's transactions run on whichever server session is free, so nothing
may live in a session: no startup options, no prepared statements, no session locks, no LISTEN.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from infrastructure.db import create_pool, direct_url, session_options
from infrastructure.event_store import NO_STREAM, EventStore, NewEvent
from projections.catalog import PROJECTORS
from projections.engine import Job, catch_up, catch_up_all, live_names
from projections.rebuild import rebuild
from projections.verify import verify
from tests.api.conftest import chronicle_env, running_chronicle
from tests.deployment.conftest import pooled_settings
from tests.deployment.servers import free_port
from tests.projections.conftest import REGISTRY
from tests.projections.history import History, append_history
from tests.store.conftest import note_registry

THREADS = 32
APPENDS_PER_THREAD = 10


def choices(seed: int, n: int) -> list[tuple[int, int, int]]:
    """`n` random (stream, op, arg) choices for History."""
    rnd = random.Random(seed)
    return [(rnd.randrange(60), rnd.randrange(41), i) for i in range(n)]


def run_threads(count: int, target) -> list[BaseException]:
    """Run `target(i)` on `count` threads at once; the errors they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def guarded(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_startup_options_are_refused_by_the_pooler(pooled_url: str, fresh_database_url: str) -> None:
    """Why CHRONICLE_POOLER exists: the direct way of bounding a session cannot pass PgBouncer."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(pooled_url, options=session_options(pooled_settings(fresh_database_url))).close()


def test_320_concurrent_appends_through_the_pooler(pooled_url: str, fresh_database_url: str) -> None:
    """32 threads on 32 client connections share 8 server sessions: every append lands once.

    Prepared statements would collide here (`_pg3_0` prepared on one session, missing on another).
    """
    settings = pooled_settings(fresh_database_url, chronicle_pool_min_size=THREADS, chronicle_pool_max_size=THREADS)
    pool = create_pool(pooled_url, settings, name="pgbouncer-appends")
    try:
        store = EventStore(pool, note_registry(), settings)

        def writer(i: int) -> None:
            for n in range(APPENDS_PER_THREAD):
                stream = f"note-{i}"
                store.append(stream, NO_STREAM if n == 0 else n, [NewEvent("note.written", {"text": "x", "n": n})])

        errors = run_threads(THREADS, writer)
        assert errors == []
        with psycopg.connect(fresh_database_url) as conn:
            count, positions, streams = conn.execute(
                "SELECT count(*), count(DISTINCT position), count(DISTINCT stream_id) FROM events").fetchone()
        assert (count, positions, streams) == (THREADS * APPENDS_PER_THREAD, THREADS * APPENDS_PER_THREAD, THREADS)
    finally:
        pool.close()


def test_timeouts_hold_through_the_pooler_and_stay_in_their_transaction(
        pooled_url: str, fresh_database_url: str) -> None:
    """A statement over CHRONICLE_STATEMENT_TIMEOUT_MS is cancelled, in a transaction or alone; an idle
    transaction is ended; and the limits never leak to the pooler's other clients."""
    settings = pooled_settings(fresh_database_url, chronicle_pool_min_size=1, chronicle_pool_max_size=1,
                               chronicle_statement_timeout_ms=300, chronicle_idle_in_transaction_timeout_ms=400)
    pool = create_pool(pooled_url, settings, name="pgbouncer-timeouts")
    try:
        with pool.connection() as conn:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(3)")
            with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction():
                conn.execute("SELECT 1")
                conn.execute("SELECT pg_sleep(3)")
            assert conn.execute("SELECT current_setting('statement_timeout') AS t").fetchone()["t"] == "300ms"
            with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout), conn.transaction():
                conn.execute("SELECT 1")
                time.sleep(1.0)  # idle in the transaction past its limit: the server ends the session
                conn.execute("SELECT 1")
        # Another client of the pooler, on the same server sessions, runs with the server's defaults.
        with psycopg.connect(pooled_url, autocommit=True) as other:
            for _ in range(5):
                assert other.execute("SELECT current_setting('statement_timeout')").fetchone()[0] == "0"
    finally:
        pool.close()


def test_partition_locks_are_exclusive_through_the_pooler(pooled_url: str, fresh_database_url: str) -> None:
    """While one client's batch holds partitions (its transaction is open), another client's catch-up
    through the same pooler finds them busy; after the commit it catches up."""
    settings = pooled_settings(fresh_database_url, chronicle_pool_min_size=2, chronicle_pool_max_size=4)
    pool = create_pool(pooled_url, settings, name="pgbouncer-locks")
    try:
        store = EventStore(pool, REGISTRY, settings)
        append_history(store, History(3), choices(3, 40))
        projector = PROJECTORS["documents"]
        catch_up_all(pool, projector, partitions=2)  # creates the projection's rows
        with pool.connection() as holder, holder.transaction():
            Job(projector, 2, (0, 1), live_names(projector), locking=True).lock(holder)
            for k in (0, 1):
                assert catch_up(pool, projector, k, partitions=2).busy
        assert not catch_up(pool, projector, 0, partitions=2).busy
    finally:
        pool.close()


def test_projections_catch_up_through_the_pooler_exactly_once(pooled_url: str, fresh_database_url: str) -> None:
    """Eight threads race to catch up every projection through the pooler while events keep coming;
    afterwards (and after a rebuild) each projection equals a rebuild of its partitions (verify finds
    no difference)."""
    settings = pooled_settings(fresh_database_url, chronicle_pool_min_size=4, chronicle_pool_max_size=12)
    pool = create_pool(pooled_url, settings, name="pgbouncer-projections")
    try:
        store = EventStore(pool, REGISTRY, settings)
        history = History(11)
        appended = threading.Event()

        def work(i: int) -> None:
            if i == 0:
                append_history(store, history, choices(11, 400))
                appended.set()
            for _ in range(30):
                for projector in PROJECTORS.values():
                    catch_up(pool, projector, i % 4, partitions=4, batch_size=7)
                if appended.is_set():
                    break
            for projector in PROJECTORS.values():
                catch_up_all(pool, projector, partitions=4, batch_size=7)

        assert run_threads(8, work) == []
        # A rebuild holds its lock and verify its temporary tables for a whole session: both take
        # a connection to DATABASE_DIRECT_URL, past the pooler.
        assert rebuild(pool, "agents", batch_size=9).state == "done"
        for projector in PROJECTORS.values():
            catch_up_all(pool, projector, partitions=4)
            report = verify(pool, projector.name)
            assert report.ok, report.as_dict()
        with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
            head = conn.execute("SELECT max(position) AS p FROM events").fetchone()["p"]
            assert {r["position"] for r in conn.execute("SELECT position FROM projection_checkpoint")} == {head}
    finally:
        pool.close()


def test_listen_goes_to_the_direct_url(pooled_url: str, fresh_database_url: str) -> None:
    """A reader waiting for new events LISTENs past the pooler, on DATABASE_DIRECT_URL."""
    settings = pooled_settings(fresh_database_url)
    pool = create_pool(pooled_url, settings, name="pgbouncer-listen")
    try:
        assert direct_url(pool) == fresh_database_url
        store = EventStore(pool, note_registry(), settings)
        timer = threading.Timer(0.3, lambda: store.append("n", NO_STREAM, [NewEvent("note.written", {"text": "x"})]))
        timer.start()
        assert store.wait_for_events(0, timeout=30)
        timer.join()
    finally:
        pool.close()


def test_commands_and_reads_through_the_service_behind_the_pooler(
        pooled_url: str, fresh_database_url: str, tmp_path) -> None:
    """`chronicle up` with DATABASE_URL on PgBouncer: commands, projections and read-your-writes work."""
    from service_layer.keys import create_key

    pool = create_pool(fresh_database_url, pooled_settings(fresh_database_url).model_copy(
        update={"chronicle_pooler": "none", "chronicle_pool_min_size": 1, "chronicle_pool_max_size": 1}))
    try:
        token = create_key(pool, "writer", "writer", actor_id="svc")[1]
    finally:
        pool.close()
    env = chronicle_env(DATABASE_URL=pooled_url, CHRONICLE_POOLER="transaction",
                        DATABASE_DIRECT_URL=fresh_database_url, CHRONICLE_DATA_DIR=str(tmp_path / "data"))
    with running_chronicle(env, tmp_path / "server.log", free_port()) as base, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        ids = []
        for n in range(20):
            created = client.post("/v1/documents", json={"namespace": "pooled", "type": "note",
                                                          "title": f"n{n}", "content": "v1"})
            assert created.status_code == 201, created.text
            ids.append(created.json()["stream_id"])
        updated = client.patch(f"/v1/documents/{ids[0]}", json={"content": "v2"}, headers={"If-Match": '"1"'})
        assert updated.status_code == 200, updated.text
        position = updated.json()["position"]
        read = client.get(f"/v1/documents/{ids[0]}", params={"min_position": position})
        assert read.status_code == 200, read.text
        assert (read.json()["content"], read.json()["document_version"]) == ("v2", 2)
        listed = client.get("/v1/documents", params={"namespace": "pooled", "limit": 50, "min_position": position})
        assert {d["document_id"] for d in listed.json()["documents"]} == set(ids)
        assert client.patch(f"/v1/documents/{ids[0]}", json={"content": "v3"},
                            headers={"If-Match": '"1"'}).status_code == 412
