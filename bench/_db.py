"""Bench helpers: a throwaway migrated database, and a mixed workspace log written with COPY."""

from __future__ import annotations

import json
import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

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


def write_log(url: str, count: int, seed: int = 1) -> None:
    """COPY `count` events of a mixed workspace history (chains, documents, agents) into `events`."""
    from tests.projections.history import History

    history = History(seed)
    versions: dict[str, int] = {}
    kinds = {}
    import random

    rnd = random.Random(seed)
    meta = json.dumps({"actor_id": "u", "actor_type": "user", "session_id": "s1"})
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY events (event_id, stream_id, stream_type, version, type, payload, metadata)"
                      " FROM STDIN") as copy:
            for _ in range(count):
                sid, event = history.next_event(rnd.randrange(1000), rnd.randrange(1000), rnd.randrange(1000))
                versions[sid] = versions.get(sid, 0) + 1
                kinds.setdefault(sid, event.type.split(".")[0].replace("edge", "chain"))
                copy.write_row((str(uuid.uuid4()), sid, kinds[sid], versions[sid], event.type,
                                json.dumps(event.payload), meta))
        cur.execute("INSERT INTO streams (stream_id, stream_type, version) SELECT * FROM unnest(%s::text[],"
                    " %s::text[], %s::bigint[])", (list(versions), [kinds[s] for s in versions], list(versions.values())))
        conn.commit()
