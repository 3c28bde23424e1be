"""Freshness: at a steady command rate, the time from an append's commit to its row in the
snapshot tables (its partition's checkpoint, committed with the rows). Prints p50 and p99.
Target: p99 under 200 ms. Runs a real dramatiq worker process on Redis.

The commands are Chronicle's own domain events (bench/workload.py), appended through the event
store by several appender threads (a stream stays on one thread, so its versions stay in order);
the store's after-append hook sends the wake-ups, as `chronicle up` wires it.

Baseline, measured in the same run by the same watcher loop: a plain one-row INSERT committed on
its own connection, until a plain SELECT polling on another connection sees it. The ratio
Chronicle / baseline is what the projection path adds on top of "commit, then be seen".

    .venv/bin/python bench/freshness.py [--rate 500] [--seconds 10] [--appenders 8] [--threads 4]
"""

from __future__ import annotations

import argparse
import heapq
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import _db
import redis
from workload import Change, Workload

from infrastructure.broker import make_broker
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from projections.catalog import projectors_for
from projections.partitioning import partition_of
from workers.wakeups import install_wakeups

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PARTITIONS = 4
POLL_SECONDS = 0.003


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values`, in milliseconds."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


class Watcher(threading.Thread):
    """Polls checkpoints (and the baseline table) and records when each pending item became visible."""

    def __init__(self, pool) -> None:
        super().__init__(daemon=True)
        self.pool = pool
        self.lock = threading.Lock()
        # (projection, partition) -> heap of (position, committed at): checked cheapest first.
        self.pending: dict[tuple[str, int], list[tuple[int, float]]] = {}
        self.baseline_pending: dict[int, float] = {}
        self.latencies: list[float] = []
        self.baseline: list[float] = []
        self.stop = threading.Event()

    def add(self, projection: str, partition: int, position: int, committed: float) -> None:
        with self.lock:
            heapq.heappush(self.pending.setdefault((projection, partition), []), (position, committed))

    def waiting(self) -> int:
        with self.lock:
            return sum(len(h) for h in self.pending.values())

    def run(self) -> None:
        with self.pool.connection() as conn:
            while not self.stop.is_set():
                # Every checkpoint and the newest ping, in one query.
                row = conn.execute(
                    "SELECT (SELECT coalesce(json_agg(json_build_array(projection, partition, position)), '[]')"
                    " FROM projection_checkpoint) AS cps, (SELECT coalesce(max(id), 0) FROM bench_ping) AS ping"
                ).fetchone()
                now = time.perf_counter()
                with self.lock:
                    for projection, partition, position in row["cps"]:
                        heap = self.pending.get((projection, partition))
                        while heap and heap[0][0] <= position:
                            self.latencies.append(now - heapq.heappop(heap)[1])
                    for ping in [p for p in self.baseline_pending if p <= row["ping"]]:
                        self.baseline.append(now - self.baseline_pending.pop(ping))
                time.sleep(POLL_SECONDS)


def appender(store: EventStore, changes: queue.Queue, watcher: Watcher, start: float, rate: float,
             sent: list[int]) -> None:
    """Append this thread's changes at its share of the rate, noting each commit for the watcher."""
    while True:
        item = changes.get()
        if item is None:
            return
        due, change = item
        wait = start + due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        result = store.append(change.stream_id, change.expected_version, change.events, change.metadata)
        committed = time.perf_counter()
        partition = partition_of(change.stream_id, PARTITIONS)
        for projector in projectors_for(result.stream_type):
            watcher.add(projector.name, partition, result.position, committed)
        sent.append(1)


def pinger(pool, watcher: Watcher, stop: threading.Event) -> None:
    """The baseline: a plain INSERT committed, 20 times a second, for the watcher's SELECT to see."""
    with pool.connection() as conn:
        ping = 0
        while not stop.wait(0.05):
            ping += 1
            conn.execute("INSERT INTO bench_ping (id) VALUES (%s)", (ping,))
            with watcher.lock:
                watcher.baseline_pending[ping] = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--appenders", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4, help="worker threads")
    parser.add_argument("--worker-log", help="write the worker's output to this file")
    parser.add_argument("--in-process", action="store_true",
                        help="diagnosis: catch up in this process's threads instead of the worker (no Redis)")
    args = parser.parse_args()
    namespace = f"chronicle-bench-{uuid.uuid4().hex[:8]}"
    workload = Workload(7)
    changes: list[Change] = list(workload.changes(int(args.rate * args.seconds)))
    with _db.scratch_database("chronicle_bench_fresh") as url:
        settings = Settings(database_url=url, redis_url=REDIS, chronicle_partitions=PARTITIONS,
                            chronicle_pool_max_size=args.appenders + 4)
        env = dict(os.environ, DATABASE_URL=url, REDIS_URL=REDIS, CHRONICLE_BROKER_NAMESPACE=namespace,
                   CHRONICLE_PARTITIONS=str(PARTITIONS), CHRONICLE_TICK_SECONDS="1")
        code = f"from workers.main import run_worker; run_worker(1, {args.threads})"
        worker = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=_db.Path(__file__).parents[1],
                                  start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=open(args.worker_log, "w") if args.worker_log else subprocess.DEVNULL)
        pool = create_pool(url, settings, name="bench-freshness")
        with pool.connection() as conn:
            conn.execute("CREATE TABLE bench_ping (id bigint PRIMARY KEY)")
        broker = make_broker(settings, namespace=namespace)
        from workers import wakeups

        store = EventStore(pool, settings=settings)  # the domain's registry validates every event
        send = wakeups.redis_sender(broker)
        if args.in_process:
            worker.terminate()
            from concurrent.futures import ThreadPoolExecutor

            from projections.catalog import PROJECTORS
            from projections.engine import catch_up

            threads_pool = ThreadPoolExecutor(args.threads)

            def send(projection: str, partition: int, position: int, partitions: int) -> None:
                threads_pool.submit(catch_up, pool, PROJECTORS[projection], partition, partitions=PARTITIONS,
                                    target=position)
        install_wakeups(store, PARTITIONS, send=send)
        time.sleep(3)  # let the worker boot
        watcher = Watcher(pool)
        watcher.start()
        stop_ping = threading.Event()
        ping = threading.Thread(target=pinger, args=(pool, watcher, stop_ping), daemon=True)
        ping.start()
        queues = [queue.Queue() for _ in range(args.appenders)]
        for i, change in enumerate(changes):
            queues[partition_of(change.stream_id, args.appenders)].put((i / args.rate, change))
        sent: list[int] = []
        start = time.perf_counter() + 0.1
        threads = [threading.Thread(target=appender, args=(store, q, watcher, start, args.rate, sent))
                   for q in queues]
        for q, t in zip(queues, threads):
            q.put(None)
            t.start()
        for t in threads:
            t.join()
        achieved = len(sent) / (time.perf_counter() - start)
        deadline = time.perf_counter() + 15
        while watcher.waiting() and time.perf_counter() < deadline:
            time.sleep(0.05)
        stop_ping.set()
        watcher.stop.set()
        watcher.join()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(15)
        broker.close()
        pool.close()
        client = redis.Redis.from_url(REDIS)  # this run's namespace goes with it
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
    lat, base = watcher.latencies, watcher.baseline
    print(f"commands: {len(sent)} at {achieved:.0f}/s (asked {args.rate}/s, {args.appenders} appender threads);"
          f" measured {len(lat)} projection updates, unseen {watcher.waiting()}")
    print(f"append-commit to snapshot row: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms"
          f" (target p99 < 200 ms)")
    print(f"baseline, plain INSERT commit to a polling SELECT seeing it ({len(base)} samples):"
          f" p50 {pct(base, 0.5):.1f} ms, p99 {pct(base, 0.99):.1f} ms")
    print(f"ratio Chronicle / baseline: p50 {pct(lat, 0.5) / pct(base, 0.5):.1f}x,"
          f" p99 {pct(lat, 0.99) / pct(base, 0.99):.1f}x")


if __name__ == "__main__":
    main()
