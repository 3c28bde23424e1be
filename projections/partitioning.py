"""Partitions and advisory-lock keys: stable numbers shared by Python and SQL.

`partition_of` matches SQL `projection_partition()` (md5-based, never Python's hash()).
Locks use the two-int advisory form; the single-bigint form belongs to the append locks.
"""

from __future__ import annotations

import hashlib

REBUILD_LOCK_PARTITION = -1
REPLAY_LOCK_PARTITION = -2  # held by the worker running a replay job


def partition_of(stream_id: str, partitions: int) -> int:
    """The partition a stream belongs to, out of `partitions`."""
    return int(hashlib.md5(stream_id.encode()).hexdigest()[:8], 16) % partitions


def projection_key(name: str) -> int:
    """A signed 32-bit number naming a projection in two-int advisory locks."""
    value = int(hashlib.md5(f"chronicle.projection:{name}".encode()).hexdigest()[:8], 16)
    return value - (1 << 32) if value >= (1 << 31) else value


def lock_key(name: str, partition: int) -> tuple[int, int]:
    """The (int, int) advisory key of a projection's partition (-1: its rebuild, -2: its replay job)."""
    return projection_key(name), partition
