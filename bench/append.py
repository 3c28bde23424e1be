"""Append and read throughput: Chronicle's EventStore against plain PostgreSQL.

Commands of one event each, one transaction each, with 1 and 8 writer threads, through
`EventStore.append` and through a plain single-row INSERT on a same-shaped table; then the
ordered read rate of `read_all` against a plain ordered SELECT. It creates its own database
(on DATABASE_URL's server, else 127.0.0.1:5432), migrates it, and drops it at the end.
Target: at 8 writers, Chronicle at least 0.6 of the plain INSERT. The two alternate in short
slices; the spread of the slices' ratios shows how much the shared machine moved meanwhile.
Chronicle's concurrent one-event appends are written in groups (group commit); a further line
shows the same appends each alone, as CHRONICLE_APPEND_GROUP_MAX=1 writes them.

    .venv/bin/python bench/append.py [--seconds 8] [--rounds 8] [--writers 1,8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import conninfo
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.event_types import EventTypeRegistry  # noqa: E402
from infrastructure.config import Settings  # noqa: E402
from infrastructure.db import create_pool  # noqa: E402
from infrastructure.event_store import ANY, EventMetadata, EventStore, NewEvent  # noqa: E402
from infrastructure.migrations import migrate  # noqa: E402

LOCAL_URL = "postgresql://127.0.0.1:5432/postgres"
METADATA = EventMetadata(actor_id="bench", actor_type="service", session_id="bench-session")
PLAIN_HASH = bytes(32)  # the plain INSERT stores a hash-sized value it does not compute
PAYLOAD = {"document_id": "doc-1", "title": "A title", "body": "x" * 200}

registry = EventTypeRegistry()


@registry.register("document.updated")
class DocumentUpdated(BaseModel):
    """The benchmark's one event type: a small document edit."""

    document_id: str
    title: str
    body: str


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)


def create_plain_table(url: str) -> None:
    """A table shaped like `events` (same columns, keys and indexes, no triggers), for plain INSERTs:
    like the segment being written (docs/log-segments.md), one table with every key of the log."""
    with psycopg.connect(url, autocommit=True) as conn:
        segment = conn.execute("SELECT table_name FROM log_segment WHERE archived_at IS NULL"
                               " ORDER BY segment_number DESC LIMIT 1").fetchone()[0]
        conn.execute(
            f"CREATE TABLE plain_events (LIKE {segment} INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
        conn.execute("ALTER TABLE plain_events ALTER position ADD GENERATED ALWAYS AS IDENTITY")
        conn.execute("ALTER TABLE plain_events ALTER recorded_at SET DEFAULT clock_timestamp()")


def run_writers(writers: int, seconds: float, command: Callable[[int, int], None], start: int = 0) -> tuple[int, float]:
    """Run `command(writer, n)` in a loop on each writer thread for `seconds`; return (commands, elapsed).

    `n` counts on from `start` for each writer, so a later slice continues a writer's streams.
    """
    counts = [0] * writers
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                command(index, start + n)
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
            stop.set()
        counts[index] = n

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts), elapsed


def backend_cpu_seconds(pool) -> float | None:
    """CPU seconds used so far by this database's server processes, or None if not on this machine.

    With the client's own CPU time, a cost per event that load from elsewhere barely moves.
    """
    with pool.connection() as conn:
        pids = [r["pid"] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall()]
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    return total


def recorder_append(url: str, settings: Settings, writers: int) -> Callable[[int, int], None]:
    """A command that appends one event per call through the library's recorder (insert_events).

    The path every domain command's save takes: ChronicleApplicationRecorder on its own datastore.
    """
    from eventsourcing.persistence import StoredEvent

    from infrastructure.eventsourcing_recorders import ChronicleApplicationRecorder, ChronicleDatastore

    datastore = ChronicleDatastore(url, settings, registry, name="chronicle-bench-recorder")
    recorder = ChronicleApplicationRecorder(datastore)
    streams = [uuid.uuid4() for _ in range(writers)]
    state = json.dumps(PAYLOAD).encode()
    versions = [0] * writers

    def append(writer: int, n: int) -> None:
        versions[writer] += 1
        recorder.insert_events([StoredEvent(streams[writer], versions[writer], "bench:Edited", state)],
                               actor_id="bench", actor_type="service", session_id="bench-session")

    append.close = datastore.close  # type: ignore[attr-defined]
    return append


def bench_appends(
    store: EventStore, pool, writers: int, seconds: float, rounds: int,
    through: Callable[[int, int], None] | None = None,
) -> tuple[float, float, dict[str, tuple[float, float | None]], list[float]]:
    """Events/s through Chronicle's append and through a plain INSERT, for `writers` threads.

    The two alternate in `rounds` slices, so load from elsewhere on the machine hits both alike.
    Also returns each one's CPU microseconds per event, (client, server or None), and the
    ratio of each slice pair, sorted: their spread shows how noisy the machine was.
    """
    payload_text = json.dumps(PAYLOAD)
    metadata_text = METADATA.model_dump_json(exclude_none=True)
    next_version = [0] * writers  # each writer owns one stream per writer count

    def plain(writer: int, n: int) -> None:
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO plain_events (event_id, stream_id, stream_type, version, type,"
                " schema_version, payload, metadata, log_name, hash)"
                " VALUES (%s, %s, 'document', %s, 'document.updated', 1, %s::jsonb, %s::jsonb, 'chronicle', %s)",
                (uuid.uuid4(), f"w{writers}{'-r' if through else ''}-plain-{writer}", n + 1, payload_text, metadata_text,
                 PLAIN_HASH),
            )

    def chronicle(writer: int, n: int) -> None:
        # Each writer owns one stream and appends at the version it expects.
        version = next_version[writer]
        store.append(f"w{writers}-doc-{writer}", version, [NewEvent("document.updated", PAYLOAD)], METADATA)
        next_version[writer] = version + 1

    chronicle = through or chronicle
    totals = {"plain": [0, 0.0, 0.0, 0.0], "chronicle": [0, 0.0, 0.0, 0.0]}
    round_ratios = []
    plain_done = 0
    for _ in range(rounds):
        rates = {}
        for name, command in (("plain", plain), ("chronicle", chronicle)):
            client, server = time.process_time(), backend_cpu_seconds(pool)
            done, elapsed = run_writers(writers, seconds / rounds, command, start=plain_done)
            server_after = backend_cpu_seconds(pool)
            totals[name][0] += done
            totals[name][1] += elapsed
            totals[name][2] += time.process_time() - client
            totals[name][3] += server_after - server if server is not None and server_after is not None else float("nan")
            rates[name] = done / elapsed
            if name == "plain":
                plain_done += done  # plain versions only need to be unique per writer
        round_ratios.append(rates["chronicle"] / rates["plain"])
    cpu = {
        name: (1e6 * t[2] / t[0], None if t[3] != t[3] else 1e6 * t[3] / t[0]) for name, t in totals.items()
    }
    return (totals["chronicle"][0] / totals["chronicle"][1], totals["plain"][0] / totals["plain"][1], cpu,
            sorted(round_ratios))


def bench_reads(store: EventStore, pool, page: int = 1000) -> tuple[float, float, int]:
    """Events/s reading the whole log in pages: `read_all` against a plain ordered SELECT."""
    started = time.perf_counter()
    after, total = 0, 0
    while batch := store.read_all(after, page):
        after, total = batch[-1].position, total + len(batch)
    chronicle_rate = total / (time.perf_counter() - started)

    started = time.perf_counter()
    after, plain_total = 0, 0
    with pool.connection() as conn:
        while rows := conn.execute(
            "SELECT * FROM events WHERE position > %s ORDER BY position LIMIT %s", (after, page)
        ).fetchall():
            after, plain_total = rows[-1]["position"], plain_total + len(rows)
    plain_rate = plain_total / (time.perf_counter() - started)
    return chronicle_rate, plain_rate, total


def _row(writers: int, rate: float, plain_rate: float, cpu: dict, slices: list[float]) -> str:
    """One line of the appends table: rates, ratio, the slices' spread and the CPU per event."""
    spread = f"{slices[0]:.2f}/{statistics.median(slices):.2f}/{slices[-1]:.2f}"
    return (f"{writers:>8} {rate:>15,.0f} {plain_rate:>18,.0f} {rate / plain_rate:>6.2f}"
            f" {spread:>22}   {_cpu(cpu['chronicle'])} | {_cpu(cpu['plain'])}")


def _cpu(costs: tuple[float, float | None]) -> str:
    client, server = costs
    return f"{client:.0f}+{server:.0f}" if server is not None else f"{client:.0f}+?"


def main() -> None:
    """Create a bench database, measure appends and reads, print the rates, drop the database."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per measured phase")
    parser.add_argument("--writers", default="1,8", help="comma-separated writer thread counts")
    parser.add_argument("--rounds", type=int, default=8, help="alternating slices per phase")
    args = parser.parse_args()
    writer_counts = [int(w) for w in args.writers.split(",")]

    admin_url = os.environ.get("DATABASE_URL") or LOCAL_URL
    dbname = f"chronicle_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = with_dbname(admin_url, dbname)
    settings = Settings(chronicle_pool_min_size=max(writer_counts) + 1, chronicle_pool_max_size=max(writer_counts) + 2)
    try:
        migrate(url)
        create_plain_table(url)
        pool = create_pool(url, settings, name="chronicle-bench")
        try:
            store = EventStore(pool, registry, settings)
            run_writers(2, min(1.0, args.seconds), lambda w, n: store.append(
                f"warmup-{w}", n, [NewEvent("document.updated", PAYLOAD)]))
            run_writers(2, min(1.0, args.seconds), lambda w, n: store.append(
                f"warmup-{w}", ANY, [NewEvent("document.updated", PAYLOAD)]))
            # Shared machines vary a lot (WAL fsync latency above all): print the load to judge by.
            print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(f"appends: one event per command, one transaction each, {args.seconds:g} s per phase"
                  f" in {args.rounds} alternating slices")
            print(f"{'writers':>8} {'chronicle ev/s':>15} {'plain INSERT ev/s':>18} {'ratio':>6}"
                  f" {'slices min/median/max':>22}   CPU us/event client+server: chronicle | plain")
            for writers in writer_counts:
                chronicle_rate, plain_rate, cpu, slices = bench_appends(
                    store, pool, writers, args.seconds, args.rounds)
                print(_row(writers, chronicle_rate, plain_rate, cpu, slices))
            # The same appends, each its own statement and transaction (CHRONICLE_APPEND_GROUP_MAX=1):
            # what group commit (infrastructure/append_groups.py) adds at the largest writer count.
            writers = max(writer_counts)
            alone = EventStore(pool, registry, settings.model_copy(update={"chronicle_append_group_max": 1}))
            versions = [0] * writers

            def append_alone(writer: int, n: int) -> None:
                alone.append(f"w{writers}-alone-{writer}", versions[writer], [NewEvent("document.updated", PAYLOAD)],
                             METADATA)
                versions[writer] += 1

            rate, plain_rate, cpu, slices = bench_appends(alone, pool, writers, args.seconds, args.rounds, append_alone)
            print("the same, each append alone (no group commit):")
            print(_row(writers, rate, plain_rate, cpu, slices))
            # The library recorder (the path of every domain command), at the largest writer count.
            command = recorder_append(url, settings, writers)
            try:
                rate, plain_rate, cpu, slices = bench_appends(store, pool, writers, args.seconds, args.rounds, command)
            finally:
                command.close()
            print("library recorder insert_events, one event per call (target ratio >= 0.6):")
            print(_row(writers, rate, plain_rate, cpu, slices))
            chronicle_read, plain_read, total = bench_reads(store, pool)
            print(f"ordered reads of {total:,} events, pages of 1000:")
            print(f"  read_all {chronicle_read:,.0f} ev/s, plain ordered SELECT {plain_read:,.0f} ev/s,"
                  f" ratio {chronicle_read / plain_read:.2f}")
            print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        finally:
            pool.close()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
