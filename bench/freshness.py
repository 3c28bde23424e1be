"""Freshness: at a steady command rate, the time from an append's commit to its row in the
snapshot tables (its partition's checkpoint, committed with the rows). Prints p50 and p99.
Target: p99 under 200 ms. Runs a real dramatiq worker process on Redis.

    .venv/bin/python bench/freshness.py [--rate 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import _db
from dramatiq import Message

from infrastructure.broker import make_broker
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from projections.partitioning import partition_of
from tests.projections.conftest import REGISTRY
from tests.projections.history import History
from workers.wakeups import install_wakeups

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    namespace = f"chronicle-bench-{uuid.uuid4().hex[:8]}"
    with _db.scratch_database("chronicle_bench_fresh") as url:
        settings = Settings(database_url=url, redis_url=REDIS, chronicle_partitions=4)
        env = dict(os.environ, DATABASE_URL=url, REDIS_URL=REDIS, CHRONICLE_BROKER_NAMESPACE=namespace,
                   CHRONICLE_PARTITIONS="4", CHRONICLE_TICK_SECONDS="1")
        code = f"from workers.main import run_worker; run_worker(1, {args.threads})"
        worker = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=_db.Path(__file__).parents[1],
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pool = create_pool(url, settings, name="bench-freshness")
        broker = make_broker(settings, namespace=namespace)
        store = EventStore(pool, REGISTRY, settings)
        install_wakeups(store, 4, lambda p, k, pos: broker.enqueue(Message(
            queue_name="chronicle-projections", actor_name="catch_up_partition", args=(p, k, pos),
            kwargs={}, options={})))
        pending: list[tuple[str, int, int, float]] = []  # projection, partition, position, commit time
        latencies: list[float] = []
        done = threading.Event()
        types = {"chain": "chains", "document": "documents", "agent": "agents"}

        def watch() -> None:
            with pool.connection() as conn:
                while not done.is_set() or pending:
                    now = time.perf_counter()
                    cps = {(r["projection"], r["partition"]): r["position"] for r in conn.execute(
                        "SELECT projection, partition, position FROM projection_checkpoint").fetchall()}
                    keep = []
                    for item in list(pending):
                        if cps.get(item[:2], 0) >= item[2]:
                            latencies.append(now - item[3])
                        else:
                            keep.append(item)
                    pending[:] = keep
                    time.sleep(0.002)
                    if done.is_set() and time.perf_counter() - end > 10:
                        break

        time.sleep(2)  # let the worker boot
        watcher = threading.Thread(target=watch)
        end = float("inf")
        watcher.start()
        history = History(1)
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < args.seconds:
            due = start + sent / args.rate
            if due > time.perf_counter():
                time.sleep(due - time.perf_counter())
            sid, event = history.next_event(sent, sent * 7, sent)
            from infrastructure.event_store import ANY

            result = store.append(sid, ANY, [event], {"actor_id": "u", "actor_type": "user", "session_id": "s"})
            pending.append((types[result.stream_type], partition_of(sid, 4), result.position, time.perf_counter()))
            sent += 1
        achieved = sent / (time.perf_counter() - start)
        end = time.perf_counter()
        done.set()
        watcher.join()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(15)
        broker.close()
        pool.close()
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(f"commands: {sent} at {achieved:.0f}/s; measured {len(latencies)}, unseen {len(pending)}")
    print(f"append-commit to snapshot row: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms (target p99 < 200 ms)")


if __name__ == "__main__":
    main()
