"""Catch-up speed: project a mixed workspace log into every snapshot table with one worker
process, against a plain ordered read of the same log. Target: at least 20,000 events/s.

The log is made of Chronicle's own domain events (bench/workload.py). The worker catches up
the way a worker process does on a backlog: one thread per projection (dramatiq threads), each
catching up all its partitions in one pass (`catch_up_all`, what the tick runs). `--mode serial`
runs the projections one after the other; `--mode partitions` one partition at a time.

    .venv/bin/python bench/catch_up.py [--events 200000] [--partitions 4] [--mode threads]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import _db  # noqa: F401 - sets sys.path
import psycopg

from infrastructure.config import Settings
from infrastructure.db import create_pool
from projections.catalog import PROJECTORS
from projections.engine import DEFAULT_BATCH, catch_up, catch_up_all


def plain_read(url: str) -> float:
    """Events/s of a plain ordered read of the whole log (every column, decoded)."""
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        rows = 0
        with conn.transaction(), conn.cursor(name="plain") as cur:
            cur.itersize = 5000
            cur.execute("SELECT position, event_id, stream_id, version, type, payload, metadata, recorded_at"
                        " FROM events ORDER BY position")
            for _ in cur:
                rows += 1
        return rows / (time.perf_counter() - start)


def project(url: str, mode: str, partitions: int, batch: int) -> int:
    """Project the whole log in this process; return the events applied."""
    pool = create_pool(url, Settings(database_url=url, chronicle_pool_max_size=len(PROJECTORS) + 1),
                       name="bench-catch-up")
    try:
        if mode == "threads":
            with ThreadPoolExecutor(len(PROJECTORS)) as threads:
                return sum(r.processed for r in threads.map(
                    lambda p: catch_up_all(pool, p, partitions=partitions, batch_size=batch), PROJECTORS.values()))
        if mode == "serial":
            return sum(catch_up_all(pool, p, partitions=partitions, batch_size=batch).processed
                       for p in PROJECTORS.values())
        return sum(catch_up(pool, p, k, partitions=partitions, batch_size=batch).processed
                   for p in PROJECTORS.values() for k in range(partitions))
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--mode", choices=("threads", "serial", "partitions"), default="threads")
    args = parser.parse_args()
    with _db.scratch_database("chronicle_bench_catchup") as url:
        written = _db.write_log(url, args.events)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE events")
            conn.execute("CHECKPOINT")
        plain = plain_read(url)
        start = time.perf_counter()
        done = project(url, args.mode, args.partitions, args.batch)
        elapsed = time.perf_counter() - start
    assert done == written, f"projected {done} of {written} events"
    rate = done / elapsed
    print(f"events: {done:,} in {elapsed:.1f}s over {args.partitions} partitions x {len(PROJECTORS)} projections"
          f" (mode {args.mode})")
    print(f"catch-up into snapshot tables: {rate:,.0f} events/s (target >= 20,000)")
    print(f"plain ordered read:            {plain:,.0f} events/s")
    print(f"ratio catch-up / plain read:   {rate / plain:.2f}")


if __name__ == "__main__":
    main()
