"""Feed speed: delivery latency from commit to SSE client, and catch-up through GET /v1/subscribe.

1. Latency: 4 SSE clients follow the log's head while appends arrive at 500/s (one event each, to
   many streams, through the event store in this process); for each event, the time from its
   append's commit to its arrival at each client. Target: p99 at most 100 ms.
2. Catch-up: one SSE client reads a 200,000-event workspace log (bench/workload.py) from the
   start, against `read_all` in process paging through the same log. Target: at least 0.5.

    .venv/bin/python bench/subscribe.py [--events 200000] [--rate 500] [--seconds 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import _db
import httpx

import service_layer.operator_events  # noqa: F401 - registers the operator.* types the appends use
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import ANY, EventStore, NewEvent
from service_layer.keys import create_key



def sse_events(base: str, token: str, after: int):
    """(position, decoded event) from GET /v1/subscribe, parsed from the raw SSE lines."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        with client.stream("GET", "/v1/subscribe", params={"after": after}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    yield event["position"], event


def catch_up(base: str, token: str, store: EventStore, last: int) -> tuple[float, float]:
    """Events/s of one SSE client reading the whole log, and of read_all in process."""
    started, count = time.perf_counter(), 0
    for position, _ in sse_events(base, token, 0):
        count += 1
        if position >= last:
            break
    sse = count / (time.perf_counter() - started)
    started, count, after = time.perf_counter(), 0, 0
    while True:
        page = store.read_all(after, limit=1000)
        if not page:
            break
        count += len(page)
        after = page[-1].position
    return sse, count / (time.perf_counter() - started)


def latency(base: str, token: str, store: EventStore, rate: int, seconds: float, clients: int) -> list[float]:
    """Milliseconds from each append's commit to its arrival, over every client."""
    start = store.head()
    committed: dict[int, float] = {}
    arrivals: list[list[tuple[int, float]]] = [[] for _ in range(clients)]
    total = int(rate * seconds)
    ready = threading.Barrier(clients + 1)

    def follow(i: int) -> None:
        ready.wait()
        for position, event in sse_events(base, token, start):
            arrivals[i].append((position, time.perf_counter()))
            if event["stream_id"] == "bench-end":
                return

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(1)  # the clients' requests are in
    streams = [f"bench-{i}" for i in range(200)]
    began = time.perf_counter()
    for n in range(total):
        due = began + n / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        result = store.append(random.choice(streams), ANY, [NewEvent("operator.key_created", {"target": f"t{n}"})],
                              stream_type="operator")
        committed[result.positions[-1]] = time.perf_counter()
    store.append("bench-end", ANY, [NewEvent("operator.key_created", {"target": "end"})], stream_type="operator")
    for thread in threads:
        thread.join(60)
    return [(at - committed[p]) * 1000 for client in arrivals for p, at in client if p in committed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with _db.scratch_database("bench_subscribe") as url:
        written = _db.write_log(url, args.events)
        pool = create_pool(url, Settings(chronicle_pool_min_size=2, chronicle_pool_max_size=8), name="bench")
        store = EventStore(pool)
        token = create_key(pool, "bench", "subscriber")[1]
        proc, base = _db.serve_api(url, CHRONICLE_SUBSCRIBE_HEARTBEAT_SECONDS="5")
        try:
            sse, read_all = catch_up(base, token, store, store.head())
            delays = sorted(latency(base, token, store, args.rate, args.seconds, args.clients))
        finally:
            proc.terminate()
            proc.wait(30)
            pool.close()
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
    print(f"catch-up of {written} events: SSE client {sse:,.0f} events/s, read_all in process {read_all:,.0f}"
          f" events/s, ratio {sse / read_all:.2f} (target >= 0.5)")
    print(f"delivery at {args.rate} appends/s to {args.clients} SSE clients ({len(delays)} deliveries):"
          f" p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {statistics.mean(delays):.1f} ms (target p99 <= 100 ms)")


if __name__ == "__main__":
    main()
