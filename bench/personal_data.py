"""Benchmark: what encrypting personal fields costs a document command and a time-travel read.

In one run, on a fresh database: document updates (content is a personal field) and the state
at a random version, with encryption on, then the same with the personal marks switched off in
this process (the baseline). Prints the medians and the ratios. Creates and drops its own
database on the server named by DATABASE_URL (else 127.0.0.1:5432).

    .venv/bin/python bench/personal_data.py [--updates 1000] [--samples 300]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CHRONICLE_MASTER_KEY", "YmVuY2gtbWFzdGVyLWtleS0zMi1ieXRlcy1sb25nISE=")

from _db import scratch_database  # noqa: E402
from bench.time_travel import median_ms  # noqa: E402
from domain import commands as c  # noqa: E402
from infrastructure import personal_data, store_appends  # noqa: E402
from service_layer.workspace import Workspace  # noqa: E402


def run(ws: Workspace, updates: int, samples: int) -> tuple[float, float]:
    """Median ms of one document update, and of the state at a random version of that document."""
    made = ws.handle(c.CreateDocument(namespace="bench", document_type="session_context", title="Bench",
                                      content="v1"), c.CommandContext(actor_id="bench", subject_id="alice"))
    document_id = uuid.UUID(made.stream_id)
    counter = iter(range(10**9))

    def update() -> object:
        n = next(counter)
        return ws.handle(c.UpdateDocument(document_id=document_id, content=f"turn {n}: " + "x" * 200),
                         c.CommandContext(actor_id="bench"))

    update_ms = median_ms(updates, update)
    rng = random.Random(7)
    version = ws.repository.get(document_id).version
    read_ms = median_ms(samples, lambda: ws.state_at(made.stream_id, version=rng.randint(1, version)))
    return update_ms, read_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    with scratch_database("chronicle_bench_personal") as url:
        ws = Workspace(env={"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": url,
                            "CHRONICLE_POOL_MIN_SIZE": "1", "CHRONICLE_POOL_MAX_SIZE": "2"})
        try:
            run(ws, 50, 20)  # warm up
            encrypted = run(ws, args.updates, args.samples)
            # The baseline: the same commands and reads with no field marked personal.
            store_appends.personal_paths = personal_data.personal_paths = lambda model: ()
            personal_data._snapshot_paths = lambda topic: ()
            plain = run(ws, args.updates, args.samples)
        finally:
            ws.close()
    for name, (mine, base) in (("document update", (encrypted[0], plain[0])),
                               ("state at a random version", (encrypted[1], plain[1]))):
        print(f"{name:<26} encrypted {mine:7.3f} ms   plain {base:7.3f} ms   ratio {mine / base:.2f}")


if __name__ == "__main__":
    main()
