"""Chronicle's write-path Prometheus metrics (commands, appends, conflicts), one set per process.

They live in prometheus_client's default registry, or in PROMETHEUS_MULTIPROC_DIR when that is
set before this module is first imported (several API processes then add up to one total).
Updating one costs a lock and an addition: no I/O, no database round trip.
"""

from __future__ import annotations

import os
from functools import lru_cache

from prometheus_client import Counter, Histogram

# Commands are decided in memory and appended in one round trip: most finish in milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COMMANDS = Counter(
    "chronicle_commands",
    "Commands handled, by command type and outcome"
    " (accepted, duplicate, conflict, refused, not_found, failed).",
    ["command", "outcome"],
)
COMMAND_SECONDS = Histogram(
    "chronicle_command_duration_seconds",
    "Time to handle a command: load, decide, append.",
    ["command"],
    buckets=LATENCY_BUCKETS,
)
APPEND_SECONDS = Histogram(
    "chronicle_append_duration_seconds",
    "Time of a committed append to the event store, from taking a connection to the commit.",
    buckets=LATENCY_BUCKETS,
)
EVENTS_APPENDED = Counter(
    "chronicle_events_appended",
    "Events appended to the log (idempotent retries not counted), by stream type.",
    ["stream_type"],
)
CONFLICTS = Counter(
    "chronicle_append_conflicts",
    "Appends refused because the stream was not at the expected version"
    " (including those the domain service retried by itself).",
)


@lru_cache(maxsize=256)
def events_appended(stream_type: str) -> Counter:
    """EVENTS_APPENDED for one stream type, looked up once: `labels()` costs a lock and a tuple per call."""
    return EVENTS_APPENDED.labels(stream_type)


def multiprocess_dir() -> str | None:
    """The directory several processes share their metrics through, if one is set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
