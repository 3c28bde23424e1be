"""Freshness: at a steady command rate, the time from an append's commit to its row in the
snapshot tables (its partition's checkpoint, committed with the rows). Prints p50 and p99.
Target: p99 under 200 ms. Runs a real dramatiq worker process on Redis.

The commands are Chronicle's own domain events (bench/workload.py), appended through the event
store by several appender threads (a stream stays on one thread, so its versions stay in order);
the store's after-append hook sends the wake-ups, as `chronicle up` wires it.

A watcher in a process of its own polls every checkpoint every 3 ms and notes when each value
was first seen; each appender notes when its append returned. Both use the machine-wide monotonic
clock, and a commit's latency is the first sighting of its partition's checkpoint at or past it.

Baseline, measured in the same run by the same watcher: a plain one-row INSERT committed on its
own connection, until the watcher's plain SELECT sees it. The ratio Chronicle / baseline is what
the projection path adds on top of "commit, then be seen".

    .venv/bin/python bench/freshness.py [--rate 500] [--seconds 10] [--appenders 8] [--threads 8]
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import _db
import psycopg
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


def watch(url: str, ready, stop, timeline) -> None:
    """The watcher, in a process of its own: polls every checkpoint and the newest ping.

    It records when each value was first seen, on the machine-wide monotonic clock, and sends
    the timeline back at the end. Out of the appenders' process, its polls never wait for
    their interpreter lock, which (in a thread there) added tens of ms to the p99 seen.
    """
    seen: dict[tuple[str, int], int] = {}
    changes: list[tuple[float, str, int, int]] = []  # (seen at, projection, partition, position)
    pings: list[tuple[float, int]] = []  # (seen at, newest ping id)
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            # Every checkpoint and the newest ping, in one query.
            cps, ping = conn.execute(
                "SELECT (SELECT coalesce(json_agg(json_build_array(projection, partition, position)), '[]')"
                " FROM projection_checkpoint), (SELECT coalesce(max(id), 0) FROM bench_ping)"
            ).fetchone()
            now = time.monotonic()
            for projection, partition, position in cps:
                if position > seen.get((projection, partition), -1):
                    seen[(projection, partition)] = position
                    changes.append((now, projection, partition, position))
            if not pings or ping > pings[-1][1]:
                pings.append((now, ping))
            ready.set()
            time.sleep(POLL_SECONDS)
    timeline.put((changes, pings))


def latencies(commits: list[tuple[str, int, int, float]],
              changes: list[tuple[float, str, int, int]]) -> tuple[list[float], int]:
    """Seconds from each commit (projection, partition, position, at) until its checkpoint reached it.

    Returns the latencies and how many commits were never seen.
    """
    timeline: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
    for at, projection, partition, position in changes:  # in time order, positions only rise
        positions, times = timeline.setdefault((projection, partition), ([], []))
        positions.append(position)
        times.append(at)
    found, unseen = [], 0
    for projection, partition, position, committed in commits:
        positions, times = timeline.get((projection, partition), ([], []))
        i = bisect.bisect_left(positions, position)
        if i == len(positions):
            unseen += 1
        else:
            # Seen before the appender noted its commit (it waited for its thread's turn): 0.
            found.append(max(0.0, times[i] - committed))
    return found, unseen


def appender(store: EventStore, changes: queue.Queue, commits: list, start: float, rate: float) -> None:
    """Append this thread's changes at its share of the rate, noting each commit for the watcher."""
    while True:
        item = changes.get()
        if item is None:
            return
        due, change = item
        wait = start + due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        result = store.append(change.stream_id, change.expected_version, change.events, change.metadata)
        committed = time.monotonic()
        partition = partition_of(change.stream_id, PARTITIONS)
        for projector in projectors_for(result.stream_type):
            commits.append((projector.name, partition, result.position, committed))


def pinger(pool, pings: list, stop: threading.Event) -> None:
    """The baseline: a plain INSERT committed, 20 times a second, for the watcher's SELECT to see."""
    with pool.connection() as conn:
        ping = 0
        while not stop.wait(0.05):
            ping += 1
            conn.execute("INSERT INTO bench_ping (id) VALUES (%s)", (ping,))
            pings.append((ping, time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--appenders", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8, help="worker threads (as `chronicle worker`)")
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
        spawn = multiprocessing.get_context("spawn")
        watching, stop_watch, timeline = spawn.Event(), spawn.Event(), spawn.Queue()
        watcher = spawn.Process(target=watch, args=(url, watching, stop_watch, timeline), daemon=True)
        watcher.start()
        if not watching.wait(60):
            raise RuntimeError("the watcher process did not start")
        stop_ping = threading.Event()
        pings: list[tuple[int, float]] = []
        ping = threading.Thread(target=pinger, args=(pool, pings, stop_ping), daemon=True)
        ping.start()
        queues = [queue.Queue() for _ in range(args.appenders)]
        for i, change in enumerate(changes):
            queues[partition_of(change.stream_id, args.appenders)].put((i / args.rate, change))
        commits: list[tuple[str, int, int, float]] = []
        start = time.monotonic() + 0.1
        threads = [threading.Thread(target=appender, args=(store, q, commits, start, args.rate))
                   for q in queues]
        for q, t in zip(queues, threads):
            q.put(None)
            t.start()
        for t in threads:
            t.join()
        achieved = len(changes) / (time.monotonic() - start)
        time.sleep(3)  # the last wake-ups land
        stop_ping.set()
        stop_watch.set()
        checkpoint_changes, ping_changes = timeline.get(timeout=30)
        watcher.join(10)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(15)
        broker.close()
        pool.close()
        client = redis.Redis.from_url(REDIS)  # this run's namespace goes with it
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
    lat, unseen = latencies(commits, checkpoint_changes)
    base, _ = latencies([("ping", 0, n, at) for n, at in pings],
                        [(at, "ping", 0, newest) for at, newest in ping_changes])
    print(f"commands: {len(changes)} at {achieved:.0f}/s (asked {args.rate}/s, {args.appenders} appender threads);"
          f" measured {len(lat)} projection updates, unseen {unseen}")
    print(f"append-commit to snapshot row: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms"
          f" (target p99 < 200 ms)")
    print(f"baseline, plain INSERT commit to a polling SELECT seeing it ({len(base)} samples):"
          f" p50 {pct(base, 0.5):.1f} ms, p99 {pct(base, 0.99):.1f} ms")
    print(f"ratio Chronicle / baseline: p50 {pct(lat, 0.5) / pct(base, 0.5):.1f}x,"
          f" p99 {pct(lat, 0.99) / pct(base, 0.99):.1f}x")


if __name__ == "__main__":
    main()
