"""Benchmark: time travel cost is bounded by the snapshot interval, not the stream's length.

In one run: the state at a random version of a 10,000-event document stream against the
same on a 100-event stream (target ratio <= 2), and against a full replay without
snapshots. Prints the medians and the ratios. Creates and drops its own database on the
server named by DATABASE_URL (else 127.0.0.1:5432).

    .venv/bin/python bench/time_travel.py [--long 10000] [--short 100] [--samples 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain import commands as c  # noqa: E402
from service_layer.workspace import Workspace  # noqa: E402
from infrastructure.config import get_settings  # noqa: E402
from bench._db import scratch_database  # noqa: E402

BATCH = 500


def build_document(ws: Workspace, events: int) -> str:
    """A document stream of exactly `events` events (created, then updates), saved in batches.

    Snapshots are taken by the application as it saves, every snapshot interval.
    """
    stream_id = ws.handle(
        c.CreateDocument(namespace="bench", document_type="session_context", title="Bench", content="v1")
    ).stream_id
    written = 1
    while written < events:
        document = ws.repository.get(uuid.UUID(stream_id))
        for _ in range(min(BATCH, events - written)):
            written += 1
            document.update(content=f"content {written} " + "x" * 200, change_description=f"edit {written}")
        ws.save(document)
    return stream_id


def median_ms(samples: int, action: Callable[[], object]) -> float:
    """The median wall time of `samples` runs of `action`, in milliseconds."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    """Build both streams in a fresh database, time state_at and full replay, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=10_000)
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--replay-samples", type=int, default=15)
    parser.add_argument(
        "--force-custom-plans", action="store_true",
        help="set plan_cache_mode=force_custom_plan on the bench database: shows the cost of generic plans"
        " for stream reads whose bounds are written `(%%s IS NULL OR version > %%s)`",
    )
    args = parser.parse_args()

    interval = get_settings().chronicle_snapshot_interval
    with scratch_database("chronicle_bench_tt") as url:
        if args.force_custom_plans:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET plan_cache_mode = force_custom_plan')
        ws = Workspace(
            env={"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": url,
                 "CHRONICLE_POOL_MIN_SIZE": "1", "CHRONICLE_POOL_MAX_SIZE": "2"},
            snapshot_interval=interval,
        )
        try:
            started = time.perf_counter()
            long_id = build_document(ws, args.long)
            short_id = build_document(ws, args.short)
            print(f"built streams of {args.long} and {args.short} events in {time.perf_counter() - started:.1f} s"
                  f" (snapshot every {interval} events"
                  f"{', plan_cache_mode=force_custom_plan' if args.force_custom_plans else ''})")
            rng = random.Random(7)

            def state_at(stream_id: str, length: int) -> Callable[[], object]:
                return lambda: ws.state_at(stream_id, version=rng.randint(1, length))

            for stream_id, length in ((long_id, args.long), (short_id, args.short)):
                median_ms(10, state_at(stream_id, length))  # warm up
            long_ms = median_ms(args.samples, state_at(long_id, args.long))
            short_ms = median_ms(args.samples, state_at(short_id, args.short))
            replay_ms = median_ms(args.replay_samples, lambda: ws.replay(long_id, rng.randint(1, args.long)))
        finally:
            ws.close()

    print(f"state at a random version, {args.short:>6}-event stream (snapshots): median {short_ms:8.2f} ms")
    print(f"state at a random version, {args.long:>6}-event stream (snapshots): median {long_ms:8.2f} ms")
    print(f"full replay without snapshots, {args.long:>6}-event stream:         median {replay_ms:8.2f} ms")
    print(f"ratio long/short: {long_ms / short_ms:.2f} (target <= 2)")
    print(f"ratio full replay/snapshots (long stream): {replay_ms / long_ms:.1f}x")


if __name__ == "__main__":
    main()
