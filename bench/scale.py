"""Scale: every read, audit query and operations route at 100k events and at N, and their ratio.

Builds a log of the domain's own events (bench/workload.py, written with COPY as bench/_db.py
does), projects it, keeps a copy of the database at 100k events, grows the log to N (default
1M) and projects the growth. Then one `chronicle serve` process (one API process) on each
database answers each route in turn, the two sizes alternating call by call (so a slow moment
of the machine falls on both), and the medians and p95 at both sizes give the large/small
ratios against the target of 1.5. Also prints /metrics and /v1/projections with the whole growth
as a backlog (target under 100 ms), catch-up (the workers' batch size) and agents-rebuild rates
at both sizes, and bytes per event of the events table (heap plus indexes; target at most 800).

    DATABASE_URL=postgresql://127.0.0.1:5432/postgres .venv/bin/python bench/scale.py [--events 1000000]

It creates a scratch database on that server and drops it afterwards. `--parts` picks what
is measured (default all: routes, catch-up, rebuild, bytes). `--keep-logs NAME` keeps the two
written logs as databases NAME_small (100k events, nothing projected) and NAME_grown (projected
to 100k, grown to N) and starts from copies of them when they exist, so a run of the catch-up
and rebuild parts skips writing the log; `--drop-logs NAME` drops them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import _db
import httpx
import psycopg
from psycopg.rows import dict_row

from catch_up import project
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.migrations import migrate
from infrastructure.read_indexes import add_index
from projections.engine import DEFAULT_BATCH
from projections.rebuild import rebuild
from service_layer.keys import create_key

SMALL = 100_000
TARGET_RATIO, TARGET_BACKLOG_MS, TARGET_BYTES = 1.5, 100.0, 800


def _sample(url: str) -> dict[str, Any]:
    """Ids and values the routes are asked about: entities of the first 100k events, so both
    sizes are asked the same questions."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        one = lambda q, *a: conn.execute(q, a).fetchone()  # noqa: E731
        doc = one("SELECT document_id, version FROM document WHERE created_position <= %s AND version >= 3"
                  " ORDER BY created_position DESC LIMIT 1", SMALL)
        agent = one("SELECT agent_id, name FROM agent WHERE last_position <= %s ORDER BY last_position DESC LIMIT 1",
                    SMALL) or one("SELECT agent_id, name FROM agent LIMIT 1")
        chain = one("SELECT chain_id FROM chain ORDER BY last_position LIMIT 1")
        event = one("SELECT event_id, stream_id, metadata->>'correlation_id' AS correlation FROM events"
                    " WHERE position = %s", SMALL // 2)
        mid = one("SELECT recorded_at FROM events WHERE position = (SELECT max(position) / 2 FROM events)")
        deep = one("SELECT created_position FROM document ORDER BY created_position LIMIT 1 OFFSET"
                   " (SELECT count(*) / 2 FROM document WHERE namespace = 'ns1')")
    return {"doc": doc, "agent": agent, "chain": chain, "event": event, "mid": mid["recorded_at"],
            "deep": deep["created_position"]}


def _routes(s: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every timed route: a name, its path and query."""
    d, v, a, e = s["doc"]["document_id"], s["doc"]["version"], s["agent"]["agent_id"], s["event"]
    since = s["mid"].isoformat()
    return {
        "documents": ("/v1/documents", {}),
        "documents ?namespace": ("/v1/documents", {"namespace": "ns1"}),
        "documents ?type": ("/v1/documents", {"type": "prompt"}),
        "documents ?tag": ("/v1/documents", {"tag": "production"}),
        "documents ?tag x2": ("/v1/documents", {"tag": ["production", "staging"]}),
        "documents ?session": ("/v1/documents", {"session": "session-3"}),
        "documents ?type&metadata (operator index)": ("/v1/documents", {"type": "llm_interaction",
                                                                         "metadata.model": "m1"}),
        "documents deep cursor": ("/v1/documents", {"namespace": "ns1", "cursor": None, "_deep": s["deep"]}),
        "document": (f"/v1/documents/{d}", {}),
        "versions": (f"/v1/documents/{d}/versions", {}),
        "version": (f"/v1/documents/{d}/versions/{max(v - 1, 1)}", {}),
        "tags": (f"/v1/documents/{d}/tags", {}),
        "time travel": (f"/v1/documents/{d}/history", {"version": 2}),
        "agents": ("/v1/agents", {}),
        "agents ?name": ("/v1/agents", {"name": s["agent"]["name"]}),
        "agent": (f"/v1/agents/{a}", {}),
        "executions": (f"/v1/agents/{a}/executions", {}),
        "chains": ("/v1/chains", {}),
        "chain": (f"/v1/chains/{s['chain']['chain_id']}", {}),
        "audit events": ("/v1/events", {}),
        "audit ?actor": ("/v1/events", {"actor": "user-3"}),
        "audit ?session": ("/v1/events", {"session": "session-7"}),
        "audit ?type": ("/v1/events", {"type": "agent.execution_recorded"}),
        "audit ?stream": ("/v1/events", {"stream": e["stream_id"]}),
        "audit ?correlation": ("/v1/events", {"correlation_id": e["correlation"]}),
        "audit ?since (open, mid-log)": ("/v1/events", {"since": since}),
        "audit ?since&actor (mid-log)": ("/v1/events", {"since": since, "actor": "user-5"}),
        "event": (f"/v1/events/{e['event_id']}", {}),
        "causation": (f"/v1/events/{e['event_id']}/causation", {}),
        "stream events": (f"/v1/streams/{e['stream_id']}/events", {}),
        "readyz": ("/readyz", {}),
        "/v1/log/blockers": ("/v1/log/blockers", {}),
        "/v1/dead-letters": ("/v1/dead-letters", {}),
        "/v1/projections": ("/v1/projections", {}),
        "/metrics": ("/metrics", {}),
    }


def _cursor(value: int) -> str:
    from api.deps import encode_cursor

    return encode_cursor(value)


def _summary(samples: list[float]) -> tuple[float, float]:
    """Median and p95 of some timings."""
    samples = sorted(samples)
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def time_routes(bases: list[str], key: str, routes: dict[str, tuple[str, dict[str, Any]]], repeat: int
                ) -> list[dict[str, tuple[float, float]]]:
    """Median and p95 (ms) of each route on each server, after one warm-up call on each.

    The servers answer in turn, call by call, the first one changing each round: what the
    machine does meanwhile (other work, a checkpoint) falls on every size alike. Every answer
    must be 200.
    """
    out: list[dict[str, tuple[float, float]]] = [{} for _ in bases]
    clients = [httpx.Client(base_url=b, headers={"Authorization": f"Bearer {key}"}, timeout=60) for b in bases]
    try:
        for name, (path, params) in routes.items():
            params = dict(params)
            if "_deep" in params:
                params["cursor"] = _cursor(params.pop("_deep"))
            for client in clients:
                client.get(path, params=params)
            samples: list[list[float]] = [[] for _ in bases]
            for round_ in range(repeat):
                for i in (range(len(clients)) if round_ % 2 == 0 else reversed(range(len(clients)))):
                    start = time.perf_counter()
                    response = clients[i].get(path, params=params)
                    samples[i].append((time.perf_counter() - start) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
            for i, taken in enumerate(samples):
                out[i][name] = _summary(taken)
    finally:
        for client in clients:
            client.close()
    return out


def status_sql_ms(urls: list[str], repeat: int) -> list[float]:
    """Median ms of `chronicle status`'s report on each database, the databases in turn."""
    from cli.main import store_report

    samples: list[list[float]] = [[] for _ in urls]
    for round_ in range(repeat):
        for i in (range(len(urls)) if round_ % 2 == 0 else reversed(range(len(urls)))):
            start = time.perf_counter()
            store_report(urls[i])
            samples[i].append((time.perf_counter() - start) * 1000)
    return [statistics.median(taken) for taken in samples]


# The log's tables: its segments (docs/log-segments.md) and the event ids it claims across them.
LOG_TABLES = ("SELECT relid FROM pg_partition_tree('events') WHERE isleaf"
              " UNION ALL SELECT 'log_event_ids'::regclass")


def bytes_per_event(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("VACUUM ANALYZE events, log_event_ids")
        r = conn.execute(f"SELECT sum(pg_relation_size(relid)) AS heap, sum(pg_indexes_size(relid)) AS idx,"
                         f" sum(pg_total_relation_size(relid)) AS total, (SELECT max(position) FROM events) AS n"
                         f" FROM ({LOG_TABLES}) t").fetchone()
        per_index = conn.execute(
            "SELECT regexp_replace(indexrelid::regclass::text, '^events_segment_[0-9]+_', 'events_') AS name,"
            f" sum(pg_relation_size(indexrelid)) AS size FROM pg_index WHERE indrelid IN ({LOG_TABLES})"
            " GROUP BY 1 ORDER BY 2 DESC").fetchall()
    n = r["n"]
    return {"heap": r["heap"] / n, "indexes": r["idx"] / n, "heap+indexes": (r["heap"] + r["idx"]) / n,
            "with toast": r["total"] / n, **{f"  {i['name']}": i["size"] / n for i in per_index}}


def catch_up(url: str) -> float:
    """Events/s of projecting everything not yet projected (every projection, one process, in
    the batches a worker reads)."""
    start = time.perf_counter()
    done = project(url, "threads", 4, DEFAULT_BATCH)
    return done / (time.perf_counter() - start) if done else 0.0


def rebuild_rate(url: str) -> float:
    """Events/s of a full rebuild of the agents projection."""
    pool = create_pool(url, Settings(database_url=url, chronicle_pool_max_size=3), name="bench-scale")
    try:
        with psycopg.connect(url) as conn:
            head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
        start = time.perf_counter()
        rebuild(pool, "agents")
        return head / (time.perf_counter() - start)
    finally:
        pool.close()


def measure(urls: list[str], key: str, routes: dict, repeat: int) -> list[dict[str, Any]]:
    """Each route's timings and the status report's on each database, one API process each."""
    served = [_db.serve_api(url, CHRONICLE_API_MAX_PAGE_SIZE="200") for url in urls]
    try:
        timed = time_routes([base for _, base in served], key, routes, repeat)
        status = status_sql_ms(urls, repeat)
        return [{"routes": t, "status": s} for t, s in zip(timed, status)]
    finally:
        for proc, _ in served:
            proc.terminate()
            proc.wait(timeout=30)


PARTS = ("routes", "catch-up", "rebuild", "bytes")


@contextmanager
def _log(keep: str | None, suffix: str, fresh: Callable[[], AbstractContextManager[str]],
         write: Callable[[str], None]) -> Iterator[str]:
    """A database holding a written log: a migrated copy of the kept one `keep`_`suffix` if it
    exists, else `fresh()` with `write` run on it (and, with `keep`, kept for the next run)."""
    kept = f"{keep}_{suffix}" if keep else None
    if kept and _db.database_exists(kept):
        with _db.copy_of(_db.database_url(kept), "FILE_COPY") as url:
            migrate(url)
            yield url
        return
    with fresh() as url:
        write(url)
        if kept:
            _db.keep_copy(url, kept)
        yield url


def _same_keys(source: str, target: str) -> None:
    """Give `target` the API keys of `source` (a kept grown log was written with another key)."""
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        rows = src.execute("SELECT * FROM api_keys").fetchall()
        dst.execute("DELETE FROM api_keys")
        for row in rows:
            dst.execute(f"INSERT INTO api_keys VALUES ({', '.join(['%s'] * len(row))})", row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--keep-logs", metavar="NAME", help="keep the written logs as NAME_small and NAME_grown")
    parser.add_argument("--drop-logs", metavar="NAME", help="drop the logs --keep-logs NAME kept, and stop")
    args = parser.parse_args()
    if args.drop_logs:
        for suffix in ("small", "grown"):
            _db.drop_database(f"{args.drop_logs}_{suffix}")
        return
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    with _log(args.keep_logs, "small", lambda: _db.scratch_database("chronicle_scale"), _write_small) as url:
        pool = create_pool(url, Settings(database_url=url, chronicle_pool_max_size=2), name="bench-keys")
        key = create_key(pool, "bench", "admin", actor_id="bench")[1]
        pool.close()
        small_catch_up = catch_up(url)
        add_index(url, "llm_interaction", "model")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        routes = _routes(_sample(url)) if "routes" in parts else {}
        small_bytes = bytes_per_event(url) if "bytes" in parts else {}
        small_rebuild = rebuild_rate(url) if "rebuild" in parts else 0.0
        with _db.copy_of(url) as small_url, _log(args.keep_logs, "grown", lambda: nullcontext(url),
                                                 lambda u: _grow(u, args.events)) as large_url:
            _same_keys(small_url, large_url)
            backlog = (measure([large_url], key, {k: routes[k] for k in ("/metrics", "/v1/projections")},
                               args.repeat)[0] if "routes" in parts else {})
            large_catch_up = catch_up(large_url)
            with psycopg.connect(large_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            small, large = measure([small_url, large_url], key, routes, args.repeat) if routes else ({}, {})
            large_bytes = bytes_per_event(large_url) if "bytes" in parts else {}
            large_rebuild = rebuild_rate(large_url) if "rebuild" in parts else 0.0
    report(args.events, small, large, backlog, (small_catch_up, large_catch_up), (small_rebuild, large_rebuild),
           small_bytes, large_bytes)


def _write_small(url: str) -> None:
    """Write the first 100k events of the log."""
    t = time.perf_counter()
    _db.write_log(url, SMALL, seed=1)
    print(f"wrote {SMALL} events in {time.perf_counter() - t:.0f} s", flush=True)


def _grow(url: str, events: int) -> None:
    """Write the log on from 100k events to `events` (nothing projected of the growth)."""
    t = time.perf_counter()
    _db.write_log(url, events - SMALL, seed=2)
    print(f"wrote {events - SMALL} more events in {time.perf_counter() - t:.0f} s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")


def report(n: int, small: dict, large: dict, backlog: dict, catch: tuple, rebuilt: tuple, small_bytes: dict,
           large_bytes: dict) -> None:
    if small:
        _report_routes(n, small, large, backlog)
    print(f"\ncatch-up: {catch[0]:,.0f} ev/s at 100k, {catch[1]:,.0f} ev/s for the growth to {n:,}"
          f" (ratio {catch[1] / catch[0]:.2f}, target >= 0.9 and >= 20,000 ev/s)")
    if rebuilt[0]:
        print(f"agents rebuild: {rebuilt[0]:,.0f} ev/s at 100k, {rebuilt[1]:,.0f} ev/s at {n:,}"
              f" (ratio {rebuilt[1] / rebuilt[0]:.2f})")
    if large_bytes:
        print(f"\nbytes per event (target heap+indexes <= {TARGET_BYTES}):")
        for name in large_bytes:
            print(f"  {name:36} {small_bytes.get(name, 0):8.1f} at 100k {large_bytes[name]:8.1f} at {n // 1000}k")


def _report_routes(n: int, small: dict, large: dict, backlog: dict) -> None:
    print(f"\n{'route':45} {'100k med':>9} {'p95':>7} {n // 1000:>6}k med {'p95':>7} {'ratio':>6} {'p95 ratio':>9}")
    worst = 0.0
    for name, (s_med, s_p95) in small["routes"].items():
        l_med, l_p95 = large["routes"][name]
        ratio = l_med / s_med
        worst = max(worst, ratio)
        flag = "" if ratio <= TARGET_RATIO else "  over target"
        print(f"{name:45} {s_med:9.2f} {s_p95:7.2f} {l_med:10.2f} {l_p95:7.2f} {ratio:6.2f} {l_p95 / s_p95:9.2f}{flag}")
    ratio = large["status"] / small["status"]
    print(f"{'chronicle status (report)':45} {small['status']:9.2f} {'':7} {large['status']:10.2f} {'':7} {ratio:6.2f}")
    print(f"worst read ratio {worst:.2f} (target <= {TARGET_RATIO})")
    print(f"\nwith a backlog of {n - SMALL} events (target < {TARGET_BACKLOG_MS:.0f} ms):")
    for name, (med, p95) in backlog["routes"].items():
        print(f"  {name:20} median {med:7.2f} ms  p95 {p95:7.2f} ms")


if __name__ == "__main__":
    main()
