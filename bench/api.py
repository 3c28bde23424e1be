"""Benchmark: commands and reads over HTTP (16 concurrent clients) against their baselines.

Each client creates a document, then updates it repeatedly; every command is one append.
The HTTP side runs `chronicle serve` as a subprocess; the direct side calls the Workspace
service from 16 threads in this process; the baseline is EventStore.append. The reads compare
`GET /v1/documents/{id}` with a bare route in the same server process that runs only the same
primary-key SELECT, with no key and no middleware (bench/_read_server.py, never shipped).
Prints requests/s, p50 and p99 latency of each, and the ratios against their targets.

    DATABASE_URL=postgresql://127.0.0.1:5432/postgres .venv/bin/python bench/api.py [--clients 16]
        [--commands 150] [--reads 150] [--processes 0] [--parts baseline,direct,http,reads,long]

It creates a scratch database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from pathlib import Path

import httpx
import psycopg
from psycopg import conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Documents carry personal fields: commands encrypt them under this key (the server inherits it).
os.environ.setdefault("CHRONICLE_MASTER_KEY", "YmVuY2gtbWFzdGVyLWtleS0zMi1ieXRlcy1sb25nISE=")


def _with_dbname(url: str, name: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_clients(clients: int, commands: int, make_client: Callable[[int], Callable[[int], None]]) -> dict[str, float]:
    """Run `clients` threads, each sending `commands` commands; the latencies and the rate."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            send = make_client(index)
        except BaseException as exc:  # noqa: BLE001 - reported after the run, never a hang
            errors.append(exc)
            barrier.abort()
            return
        mine = []
        try:
            barrier.wait()
            for i in range(commands):
                start = time.perf_counter()
                send(i)
                mine.append(time.perf_counter() - start)
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise errors[0] from None
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    latencies.sort()
    return {
        "commands": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


@contextmanager
def serving(command: list[str], url: str) -> Iterator[str]:
    """Run a server command (it gets the port as its last argument); yield its base URL once ready."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=url, CHRONICLE_POOL_MAX_SIZE="20")
    server = subprocess.Popen([*command, str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


class Client:
    """One keep-alive HTTP/1.1 connection with a bearer key: the standard library's client.

    httpx costs about 1 ms of client CPU a request; on a 2-core machine that is CPU the server
    does not get, so the clients here use http.client (about 0.2 ms).
    """

    def __init__(self, base: str, token: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"}

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request, read the answer; raise unless it is a 2xx."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        content = response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{method} {path}: {response.status} {content[:200]!r}")
        return json.loads(content)


def _key(url: str, role: str) -> str:
    from service_layer.keys import create_key
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="bench")
    try:
        return create_key(pool, f"bench-{role}", role)[1]
    finally:
        pool.close()


def bench_http(url: str, clients: int, commands: int, processes: int) -> dict[str, float]:
    """Commands through `chronicle serve` with a writer key, one keep-alive connection per client.

    `processes` 0 serves with the command's default (one per core).
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

        return run_clients(clients, commands, make_client)


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


def _merge(results: list[dict[str, float]]) -> dict[str, float]:
    """Slices of one measurement as one: the mean rate, the medians of their p50 and p99."""
    return {
        "commands": sum(r["commands"] for r in results),
        "rate": statistics.mean(r["rate"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
    }


def bench_direct(url: str, clients: int, commands: int) -> dict[str, float]:
    """The same commands through one Workspace service shared by the client threads."""
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

        return run_clients(clients, commands, make_client)
    finally:
        app.close()


def bench_baseline(url: str, clients: int, commands: int) -> dict[str, float]:
    """The targets' baseline: EventStore.append, one event per transaction, one stream per client."""
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

        return run_clients(clients, commands, make_client)
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
    parser.add_argument("--commands", type=int, default=150, help="commands per client")
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
    try:
        from infrastructure.migrations import migrate

        migrate(url)
        import service_layer.operator_events  # noqa: F401 - registers the baseline's event type

        if "baseline" in parts:
            results["baseline"] = bench_baseline(url, args.clients, args.commands)
        if "direct" in parts:
            results["direct"] = bench_direct(url, args.clients, args.commands)
        if "http" in parts:
            results["HTTP"] = bench_http(url, args.clients, args.commands, args.processes)
        if "reads" in parts:
            results["GET doc"], results["GET bare"], read_slices = bench_reads(url, args.clients, args.reads)
        if "long" in parts:
            long_stream, new_stream = bench_long_stream(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{args.clients} concurrent clients, {args.commands} update commands each;"
          f" server processes: {args.processes or 'default'}")
    print(f"{'':10} {'requests/s':>12} {'p50 ms':>9} {'p99 ms':>9}")
    for label, r in results.items():
        print(f"{label:10} {r['rate']:12.0f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f}")
    baseline, direct, http = results.get("baseline"), results.get("direct"), results.get("HTTP")
    if baseline and direct:
        print(f"direct / baseline: {direct['rate'] / baseline['rate']:.2f} (target >= 0.5)")
    if baseline and http:
        print(f"HTTP / baseline: {http['rate'] / baseline['rate']:.2f} (target >= 0.3), p99 {http['p99_ms']:.0f} ms"
              " (target <= 50)")
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
