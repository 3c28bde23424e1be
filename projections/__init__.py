"""The read side: projectors (one module per read model) and the engine that runs them.

Public interface for the CLI and HTTP API: catch_up, status, rebuild, rebuild_all,
rebuild_progress, replay, list_dead_letters, retry_dead_letters, skip_dead_letter, verify.
"""

from projections.catalog import PROJECTORS, get_projector
from projections.dead_letters import list_dead_letters, retry_dead_letters, skip_dead_letter
from projections.engine import RetryPolicy, catch_up
from projections.partitioning import partition_of
from projections.rebuild import rebuild, rebuild_all, rebuild_progress, replay
from projections.status import status
from projections.verify import verify, verify_all

__all__ = [
    "PROJECTORS", "RetryPolicy", "catch_up", "get_projector", "list_dead_letters", "partition_of",
    "rebuild", "rebuild_all", "rebuild_progress", "replay", "retry_dead_letters", "skip_dead_letter",
    "status", "verify", "verify_all",
]
