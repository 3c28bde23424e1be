"""Bench helpers: a throwaway migrated database, a mixed workspace log written with COPY, a served API."""

from __future__ import annotations

import json
import os
import sys
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infrastructure.migrations import migrate  # noqa: E402

SERVER = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(prefix: str):
    """Create a migrated database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(SERVER)
    params["dbname"] = name
    url = conninfo.make_conninfo(**params)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(name: str) -> str:
    """The URL of database `name` on the bench's server."""
    params = conninfo.conninfo_to_dict(SERVER)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


def database_exists(name: str) -> bool:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def keep_copy(url: str, name: str) -> None:
    """Copy the database at `url` to a database `name` that outlives the run (nobody may be connected to `url`)."""
    source = conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(SERVER, autocommit=True) as conn:  # file by file: a log's worth of WAL spared
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')


def drop_database(name: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def copy_of(url: str, strategy: str = "WAL_LOG"):
    """A copy of the database at `url` (CREATE DATABASE ... TEMPLATE: nobody may be connected to
    it meanwhile); yield the copy's URL, drop it afterwards. FILE_COPY copies a large database
    without writing it all to the WAL (at the price of two checkpoints)."""
    params = conninfo.conninfo_to_dict(url)
    source, name = params["dbname"], f"{params['dbname']}_copy"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY {strategy}')
    params["dbname"] = name
    try:
        yield conninfo.make_conninfo(**params)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Staged events into `events` in staging order, each hashed onto its stream's chain (schema/0016),
# each id claimed in `log_event_ids` as the append functions claim it. Each stream's head hash is
# kept in a small keyed table as the loop goes: a lookup in `events` would be planned once, while
# the segment being filled is still empty, and would then scan that segment for every event.
_CHAIN_STAGED = """
DO $$
DECLARE
    e    record;
    at   timestamptz;
    prev bytea;
BEGIN
    FOR e IN SELECT * FROM staged_events ORDER BY ord LOOP
        at := clock_timestamp();
        prev := (SELECT hash FROM staged_heads WHERE stream_id = e.stream_id);
        WITH claimed AS (  -- the event's id first, as the append functions claim it (schema/0024)
            INSERT INTO log_event_ids (event_id, position) VALUES (e.event_id, nextval('events_position_seq'))
            RETURNING position)
        INSERT INTO events (position, event_id, stream_id, stream_type, version, type, payload, metadata,
                            recorded_at, hash)
        SELECT claimed.position, e.event_id, e.stream_id, e.stream_type, e.version, e.type, e.payload, e.metadata,
               at, event_hash(prev, e.event_id, e.stream_id, e.stream_type, e.version, e.type, 1, e.payload,
                              e.metadata, at)
        FROM claimed
        RETURNING hash INTO prev;
        INSERT INTO staged_heads VALUES (e.stream_id, prev)
        ON CONFLICT (stream_id) DO UPDATE SET hash = EXCLUDED.hash;
    END LOOP;
END;
$$"""


def make_segments_for(url: str, count: int) -> None:
    """Make the log's segments for the next `count` positions (and the planned ones ahead of them).

    The workers' tick makes segments ahead of need as appends go; one bulk write outruns it.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        size, ahead = conn.execute("SELECT segment_size, segments_ahead FROM log_segment_plan").fetchone()
        with conn.transaction():
            conn.execute("UPDATE log_segment_plan SET segments_ahead = %s", (ahead + count // size + 1,))
            conn.execute("SELECT ensure_log_segments()")
            conn.execute("UPDATE log_segment_plan SET segments_ahead = %s", (ahead,))


def write_log(url: str, count: int, seed: int = 1) -> int:
    """COPY about `count` events of a mixed workspace history into `events`; return how many.

    The events are the domain's own (bench/workload.py), written straight into the table as the
    store would write them (hash chain included, computed in SQL from a staged copy), so the
    bench log takes seconds rather than minutes to make. Run as the owner: the application login
    may not insert into `events`.
    """
    from workload import Workload

    versions: dict[str, tuple[str, int]] = {}
    written = 0
    make_segments_for(url, count)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE staged_events (ord bigserial, event_id uuid, stream_id text, stream_type text,"
                    " version bigint, type text, payload jsonb, metadata jsonb) ON COMMIT DROP")
        with cur.copy("COPY staged_events (event_id, stream_id, stream_type, version, type, payload, metadata)"
                      " FROM STDIN") as copy:
            for change in Workload(seed).changes(count):
                if written >= count:
                    break
                meta = json.dumps(change.metadata)
                for i, event in enumerate(change.events, start=change.expected_version + 1):
                    copy.write_row((str(event.event_id), change.stream_id, change.stream_type, i, event.type,
                                    json.dumps(event.payload), meta))
                    written += 1
                versions[change.stream_id] = (change.stream_type, change.expected_version + len(change.events))
        # Heads of streams the log already holds, then the staged events chained on from them.
        cur.execute("CREATE TEMP TABLE staged_heads (stream_id text PRIMARY KEY, hash bytea) ON COMMIT DROP")
        cur.execute("INSERT INTO staged_heads SELECT stream_id, head_hash FROM streams"
                    " WHERE stream_id = ANY(%s)", (list(versions),))
        cur.execute(_CHAIN_STAGED)
        cur.execute("INSERT INTO streams (stream_id, stream_type, version, head_hash)"
                    " SELECT s.*, (SELECT hash FROM staged_heads h WHERE h.stream_id = s.id)"
                    " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS s(id, t, v)",
                    (list(versions), [t for t, _ in versions.values()], [v for _, v in versions.values()]))
        conn.commit()
    return written


def serve_api(url: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`chronicle serve` (the API alone, one process, no workers) on `url`; its base URL once ready.

    `env` adds Chronicle settings; REDIS_URL is dropped, so the API wakes nothing.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {**os.environ, "DATABASE_URL": url, **env}
    environ.pop("REDIS_URL", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "chronicle"), "serve", "--port", str(port),
                             "--processes", "1"], cwd=Path(__file__).resolve().parents[1], env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("chronicle serve did not start")
