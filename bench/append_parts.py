"""Where the server's time of an append goes: append_event against copies with one part taken out.

One pgbench run (one client, prepared statements, asynchronous commit so the WAL flush does not
hide the CPU) draws its transactions at random from several scripts: a plain INSERT shaped like
an event, the real `append_event`, and copies of it that each leave one part out. Every script
sees the same machine at the same moments, so the differences of their mean latencies are the
parts' costs, to a microsecond or two, however much the shared machine moves meanwhile. The copies
are for measuring only: they exist in the bench's own database, which is dropped at the end.

    DATABASE_URL=... [PGBENCH=path] .venv/bin/python bench/append_parts.py [--seconds 12] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _db import scratch_database
from append import create_plain_table

PGBENCH = os.environ.get("PGBENCH", "/usr/lib/postgresql/15/bin/pgbench")
PAYLOAD = '{"document_id": "doc-1", "title": "A title", "body": "' + "x" * 200 + '"}'
METADATA = '{"actor_id": "bench", "actor_type": "service", "session_id": "bench-session"}'
HOLD = ("AND (pg_try_advisory_xact_lock_shared(log_lock_key(coalesce(pg_sequence_last_value('events_position_seq')"
        " + 1, 1)))\n               OR hold_log_position())")
HASH = re.compile(r"head_hash = event_hash\(s\.head_hash,[^)]*\)")

ZEROS = "decode(repeat('00', 32), 'hex')"
# Each copy runs as whoever runs the bench, a superuser (not SECURITY DEFINER: no rights checks),
# and only they may call it. Its name, what it leaves out, and the edits of append_event that make it.
COPIES: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("append_event_superuser", "nothing: it runs as the superuser, not as chronicle_writer", []),
    ("append_event_no_search_path", "the function's SET search_path", [("SET search_path TO 'public', 'pg_temp'", "")]),
    ("append_event_no_hash", "event_hash in the stream's update", [("HASH", "head_hash = s.head_hash")]),
    ("append_event_no_hold", "the reader hold", [(HOLD, "")]),
]


def make_copies(url: str) -> None:
    """Create each copy of append_event from its definition, and check each edit took."""
    with psycopg.connect(url, autocommit=True) as conn:
        definition = conn.execute("SELECT pg_get_functiondef('append_event'::regproc)").fetchone()[0]
        for name, _, edits in COPIES:
            text = definition.replace("public.append_event(", f"public.{name}(")
            for old, new in [(" SECURITY DEFINER\n", "\n"), *edits]:
                edited = HASH.sub(new, text, count=1) if old == "HASH" else text.replace(old, new)
                if edited == text:
                    raise SystemExit(f"{name}: append_event no longer holds what the copy leaves out")
                text = edited
            conn.execute(text)
            conn.execute(f"REVOKE ALL ON FUNCTION {name} FROM PUBLIC")


def scripts(folder: Path) -> dict[str, Path]:
    """The pgbench scripts by name: each append continues its client's own stream at its version."""
    def append(function: str) -> str:
        return (f"SELECT version FROM {function}('version', 'parts-' || :client_id, 'document', :version,"
                f" '{METADATA}', 'chronicle', gen_random_uuid(), 'document.updated', 1, '{PAYLOAD}') \\gset\n")

    texts = {
        "plain INSERT": "INSERT INTO plain_events (event_id, stream_id, stream_type, version, type, schema_version,"
                        " payload, metadata, log_name, hash) VALUES (gen_random_uuid(), 'plain', 'document', 1,"
                        f" 'document.updated', 1, '{PAYLOAD}', '{METADATA}', 'chronicle', {ZEROS})\n",
        "append_event": append("append_event"),
    } | {f"{name[len('append_event_'):]}": append(name) for name, *_ in COPIES}
    paths = {}
    for index, (name, text) in enumerate(texts.items()):
        paths[name] = folder / f"{index}.sql"
        paths[name].write_text(text)
    return paths


def run(url: str, paths: dict[str, Path], seconds: float) -> dict[str, float]:
    """One mixed pgbench run; the mean latency in microseconds of each script."""
    with psycopg.connect(url, autocommit=True) as conn:  # the stream goes on at its version from run to run
        conn.execute("INSERT INTO streams (stream_id, stream_type, version, head_hash)"
                     f" VALUES ('parts-0', 'document', 0, {ZEROS}) ON CONFLICT (stream_id) DO NOTHING")
        version = conn.execute("SELECT version FROM streams WHERE stream_id = 'parts-0'").fetchone()[0]
    params = psycopg.conninfo.conninfo_to_dict(url)
    command = [PGBENCH, "-n", "-M", "prepared", "-c", "1", "-T", str(int(seconds)), "-D", f"version={version}",
               "-h", params.get("host", "127.0.0.1"), "-p", str(params.get("port", 5432)),
               "-U", params.get("user", "postgres"), *(f"-f{path}" for path in paths.values()), params["dbname"]]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={"PGOPTIONS": "-c synchronous_commit=off", "PATH": "/usr/bin:/bin"}).stdout
    means = re.findall(r"SQL script \d+: (\S+).*?latency average = ([\d.]+) ms", out, re.DOTALL)
    by_path = {Path(path).name: 1000 * float(ms) for path, ms in means}
    return {name: by_path[path.name] for name, path in paths.items()}


def main() -> None:
    """Make the database and the copies, run the mixed pgbench, print each part's cost."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds per pgbench run")
    parser.add_argument("--runs", type=int, default=2, help="mixed pgbench runs")
    args = parser.parse_args()
    with scratch_database("chronicle_bench_parts") as url, tempfile.TemporaryDirectory() as folder:
        create_plain_table(url)
        make_copies(url)
        paths = scripts(Path(folder))
        results = [run(url, paths, args.seconds) for _ in range(args.runs)]
    print("mean latency per transaction, us (one client, asynchronous commit), each run:")
    for name in paths:
        print(f"  {name:16s} " + "  ".join(f"{r[name]:6.1f}" for r in results)
              + "   vs plain: " + "  ".join(f"{r[name] - r['plain INSERT']:+6.1f}" for r in results))
    print("each copy of append_event runs as the superuser and leaves out (compare with superuser):")
    for name, what, _ in COPIES:
        print(f"  {name[len('append_event_'):]:16s} {what}")


if __name__ == "__main__":
    main()
