"""Catch-up speed: project a mixed workspace log into every snapshot table with one worker
process, against a plain ordered read of the same log. Target: at least 20,000 events/s.

    .venv/bin/python bench/catch_up.py [--events 200000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import time

import _db  # noqa: F401 - sets sys.path
import psycopg

from infrastructure.config import Settings
from infrastructure.db import create_pool
from projections.catalog import PROJECTORS
from projections.engine import catch_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    with _db.scratch_database("chronicle_bench_catchup") as url:
        _db.write_log(url, args.events)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE events")
            start = time.perf_counter()
            rows = 0
            with conn.transaction(), conn.cursor(name="plain") as cur:
                cur.itersize = 5000
                cur.execute("SELECT position, event_id, stream_id, version, type, payload, metadata, recorded_at"
                            " FROM events ORDER BY position")
                for _ in cur:
                    rows += 1
            plain = rows / (time.perf_counter() - start)
        pool = create_pool(url, Settings(database_url=url), name="bench-catch-up")
        start = time.perf_counter()
        done = 0
        for projector in PROJECTORS.values():
            for k in range(args.partitions):
                done += catch_up(pool, projector, k, partitions=args.partitions, batch_size=args.batch).processed
        elapsed = time.perf_counter() - start
        pool.close()
    rate = done / elapsed
    print(f"events: {done:,} in {elapsed:.1f}s over {args.partitions} partitions x {len(PROJECTORS)} projections")
    print(f"catch-up into snapshot tables: {rate:,.0f} events/s (target >= 20,000)")
    print(f"plain ordered read:            {plain:,.0f} events/s")
    print(f"ratio catch-up / plain read:   {rate / plain:.2f}")


if __name__ == "__main__":
    main()
