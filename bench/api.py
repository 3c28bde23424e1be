"""Benchmark: commands and reads over HTTP (16 concurrent clients) against their baselines.

Each client creates a document, then updates it repeatedly; every command is one append.
The HTTP side runs `chronicle serve` as a subprocess; the direct side calls the Workspace
service from 16 threads in this process; the baseline is EventStore.append. The reads compare
`GET /v1/documents/{id}` with a bare route in the same server process that runs only the same
primary-key SELECT, with no key and no middleware (bench/_read_server.py, never shipped).
The baseline, direct and HTTP commands alternate in `--rounds` slices; reads alternate likewise.
Prints requests/s, p50 and p99 latency of each, the ratios against their targets, and the spread
of the slices' ratios (how much the shared machine moved meanwhile).

    DATABASE_URL=postgresql://127.0.0.1:5432/postgres .venv/bin/python bench/api.py [--clients 16]
        [--commands 150] [--rounds 3] [--reads 150] [--processes 0] [--parts baseline,direct,http,reads,long]

It creates a scratch database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from psycopg import conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._http_load import Client, run_clients, serving
# Documents carry personal fields: commands encrypt them under this key (the server inherits it).
os.environ.setdefault("CHRONICLE_MASTER_KEY", "YmVuY2gtbWFzdGVyLWtleS0zMi1ieXRlcy1sb25nISE=")


def _with_dbname(url: str, name: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


def _key(url: str, role: str) -> str:
    from service_layer.keys import create_key
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="bench")
    try:
        return create_key(pool, f"bench-{role}", role)[1]
    finally:
        pool.close()


@contextmanager
def http_commands(url: str, clients: int, processes: int) -> Iterator[Callable[[int], dict[str, float]]]:
    """Commands through `chronicle serve` with a writer key, one keep-alive connection per client.

    Yields a slice runner: `run(commands)` sends that many per client, to new documents. The
    server stays up between slices. `processes` 0 serves with the command's default (one per core).
    """
    token = _key(url, "writer")
    serve = [str(Path(sys.executable).parent / "chronicle"), "serve", "--processes", str(processes), "--port"]
    with serving(serve, url) as base:
        def make_client(index: int) -> Callable[[int], None]:
            client = Client(base, token)
            doc = client.send("POST", "/v1/documents", {"namespace": "bench", "type": "session_context",
                                                         "title": f"doc {index}", "content": "0"})["stream_id"]

            def send(i: int) -> None:
                client.send("PATCH", f"/v1/documents/{doc}", {"content": f"http {i}"})

            return send

        yield lambda commands: run_clients(clients, commands, make_client)


def bench_reads(url: str, clients: int, reads: int, rounds: int = 3) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """`GET /v1/documents/{id}` with a reader key against a bare route running only its SELECT.

    One server process holds both (bench/_read_server.py). The two alternate in `rounds` slices
    of `reads` requests per client; returns both totals and each slice pair's ratio, sorted.
    """
    from projections.catalog import PROJECTORS
    from projections.engine import catch_up_all
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="bench")
    try:
        catch_up_all(pool, PROJECTORS["documents"])
        with pool.connection() as conn:
            documents = [str(r["document_id"]) for r in conn.execute(
                "SELECT document_id FROM document ORDER BY document_id LIMIT %s", (clients,)).fetchall()]
    finally:
        pool.close()
    if not documents:
        raise RuntimeError("no projected documents to read (run the HTTP part first)")
    token = _key(url, "reader")
    totals: dict[str, list[float]] = {"chronicle": [], "bare": []}
    ratios = []
    with serving([sys.executable, str(ROOT / "bench" / "_read_server.py"), url], url) as base:
        paths = {"chronicle": "/v1/documents/", "bare": "/bare/documents/"}
        for _ in range(rounds):
            rates = {}
            for name, prefix in paths.items():
                def make_client(index: int, prefix: str = prefix) -> Callable[[int], None]:
                    client = Client(base, token)
                    path = prefix + documents[index % len(documents)]
                    client.send("GET", path)  # the connection is open before the clock starts

                    def send(i: int) -> None:
                        client.send("GET", path)

                    return send

                result = run_clients(clients, reads, make_client)
                totals[name].append(result)
                rates[name] = result["rate"]
            ratios.append(rates["chronicle"] / rates["bare"])
    return _merge(totals["chronicle"]), _merge(totals["bare"]), sorted(ratios)


def _spread(runs: list[dict[str, float]], baselines: list[dict[str, float]]) -> str:
    """min/median/max of each round's rate ratio."""
    ratios = sorted(r["rate"] / b["rate"] for r, b in zip(runs, baselines))
    return "/".join(f"{r:.2f}" for r in (ratios[0], statistics.median(ratios), ratios[-1]))


def _merge(results: list[dict[str, float]]) -> dict[str, float]:
    """Slices of one measurement as one: the mean rate, the medians of their p50 and p99."""
    return {
        "commands": sum(r["commands"] for r in results),
        "rate": statistics.mean(r["rate"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
    }


@contextmanager
def direct_commands(url: str, clients: int) -> Iterator[Callable[[int], dict[str, float]]]:
    """The same commands through one Workspace service shared by the client threads (a slice runner)."""
    from domain import commands as c
    from service_layer.workspace import Workspace

    app = Workspace({"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": url,
                     "CHRONICLE_POOL_MAX_SIZE": "20"})
    context = c.CommandContext(actor_id="bench", actor_type="service")
    try:
        def make_client(index: int) -> Callable[[int], None]:
            result = app.handle(c.CreateDocument(namespace="bench", document_type="session_context",
                                                 title=f"doc {index}", content="0"), context)
            doc = uuid.UUID(result.stream_id)

            def send(i: int) -> None:
                app.handle(c.UpdateDocument(document_id=doc, content=f"direct {i}"), context)

            return send

        yield lambda commands: run_clients(clients, commands, make_client)
    finally:
        app.close()


@contextmanager
def baseline_appends(url: str, clients: int) -> Iterator[Callable[[int], dict[str, float]]]:
    """The targets' baseline: EventStore.append, one event per transaction, one stream per client
    (a slice runner)."""
    from infrastructure.config import Settings
    from infrastructure.db import create_pool
    from infrastructure.event_store import EventMetadata, EventStore, NewEvent

    # One event per transaction, as the targets define it: no group commit (CHRONICLE_APPEND_GROUP_MAX=1).
    settings = Settings(chronicle_pool_min_size=clients, chronicle_pool_max_size=clients + 2,
                        chronicle_append_group_max=1)
    pool = create_pool(url, settings, name="bench-baseline")
    store = EventStore(pool, settings=settings)
    metadata = EventMetadata(actor_id="bench", actor_type="service")
    try:
        def make_client(index: int) -> Callable[[int], None]:
            stream = f"baseline-{index}-{uuid.uuid4().hex[:6]}"
            store.append(stream, 0, [NewEvent("operator.key_created", {"target": "bench", "details": {"n": 0}})],
                         metadata, stream_type="operator")
            version = [1]

            def send(i: int) -> None:
                store.append(stream, version[0], [NewEvent("operator.key_created", {"target": "bench", "details": {"n": i}})],
                             metadata, stream_type="operator")
                version[0] += 1

            return send

        yield lambda commands: run_clients(clients, commands, make_client)
    finally:
        pool.close()


def bench_long_stream(url: str, events: int = 10_000, commands: int = 200) -> tuple[float, float]:
    """Mean seconds of an update on a stream of `events` events and on a new stream, alternating."""
    from domain import commands as c
    from domain.decisions import decide
    from service_layer.workspace import Workspace

    app = Workspace({"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": url})
    context = c.CommandContext(actor_id="bench", actor_type="service")
    try:
        long = uuid.UUID(app.handle(c.CreateDocument(namespace="bench", document_type="session_context",
                                                     title="long", content="0"), context).stream_id)
        while app.current_version(long) < events:  # 1,000 events a save, the store's limit per append
            aggregate = app.repository.get(long)
            for i in range(min(1000, events - aggregate.version)):
                decide(app, c.UpdateDocument(document_id=long, content=f"long {i}"), aggregate)
            app.save(aggregate)
        new = uuid.UUID(app.handle(c.CreateDocument(namespace="bench", document_type="session_context",
                                                    title="new", content="0"), context).stream_id)
        spent = {long: 0.0, new: 0.0}
        for stream in (long, new):  # untimed: a process's first load of a stream reads its snapshot
            app.handle(c.UpdateDocument(document_id=stream, content="first"), context)
        for i in range(commands):
            for stream in (long, new):
                start = time.perf_counter()
                app.handle(c.UpdateDocument(document_id=stream, content=f"x {i}"), context)
                spent[stream] += time.perf_counter() - start
        return spent[long] / commands, spent[new] / commands
    finally:
        app.close()


PARTS = ("baseline", "direct", "http", "reads", "long")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--commands", type=int, default=150, help="commands per client in each slice")
    parser.add_argument("--rounds", type=int, default=3, help="slices of each command part, alternating")
    parser.add_argument("--reads", type=int, default=150, help="reads per client in each of 3 slices")
    parser.add_argument("--processes", type=int, default=0, help="`chronicle serve --processes` (0: its default)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if "reads" in parts:
        parts.add("http")  # the reads read the documents the HTTP clients wrote

    admin = os.environ.get("DATABASE_URL") or "postgresql://127.0.0.1:5432/postgres"
    name = f"chronicle_bench_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(admin, name)
    results: dict[str, dict[str, float]] = {}
    slices: dict[str, list[dict[str, float]]] = {}
    try:
        from infrastructure.migrations import migrate

        migrate(url)
        import service_layer.operator_events  # noqa: F401 - registers the baseline's event type

        # The command parts alternate in slices, so load from elsewhere hits them alike; each
        # slice's ratio to the baseline's slice of the same round shows how much the machine moved.
        makers = {"baseline": lambda: baseline_appends(url, args.clients),
                  "direct": lambda: direct_commands(url, args.clients),
                  "HTTP": lambda: http_commands(url, args.clients, args.processes)}
        with ExitStack() as stack:
            runners = {label: stack.enter_context(make()) for label, make in makers.items() if label.lower() in parts}
            for _ in range(args.rounds):
                for label, run in runners.items():
                    slices.setdefault(label, []).append(run(args.commands))
        results.update({label: _merge(runs) for label, runs in slices.items()})
        if "reads" in parts:
            results["GET doc"], results["GET bare"], read_slices = bench_reads(url, args.clients, args.reads)
        if "long" in parts:
            long_stream, new_stream = bench_long_stream(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{args.clients} concurrent clients, {args.commands} update commands each in {args.rounds} slices;"
          f" server processes: {args.processes or 'default'}")
    print(f"{'':10} {'requests/s':>12} {'p50 ms':>9} {'p99 ms':>9}")
    for label, r in results.items():
        print(f"{label:10} {r['rate']:12.0f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f}")
    baseline, direct, http = results.get("baseline"), results.get("direct"), results.get("HTTP")
    if baseline and direct:
        print(f"direct / baseline: {direct['rate'] / baseline['rate']:.2f} (target >= 0.5);"
              f" slices {_spread(slices['direct'], slices['baseline'])}")
    if baseline and http:
        print(f"HTTP / baseline: {http['rate'] / baseline['rate']:.2f} (target >= 0.3), p99 {http['p99_ms']:.0f} ms"
              f" (target <= 50); slices {_spread(slices['HTTP'], slices['baseline'])}")
    if "GET doc" in results:
        spread = "/".join(f"{r:.2f}" for r in read_slices)
        print(f"GET /v1/documents/{{id}} / bare route: {results['GET doc']['rate'] / results['GET bare']['rate']:.2f}"
              f" (target >= 0.6); slices {spread}")
    if "long" in parts:
        print(f"a command on a stream of 10,000 events {long_stream * 1000:.2f} ms, on a new stream"
              f" {new_stream * 1000:.2f} ms: {long_stream / new_stream:.2f}x (target <= 1.2)")
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if direct and http:
        print(f"HTTP / direct throughput ratio: {http['rate'] / direct['rate']:.2f}")
        print(f"HTTP - direct p50 latency: {http['p50_ms'] - direct['p50_ms']:+.2f} ms")


if __name__ == "__main__":
    main()
