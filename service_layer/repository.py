"""The workspace's repository: a cache of current aggregates, brought up to date on every load.

A cached aggregate is fast-forwarded with the events stored after its version (one indexed
SELECT, usually of one event), so a load costs no snapshot read and no replay. A stale entry
cannot write a wrong event: every append carries the version it expects, and a conflict
reloads. Events are immutable (the database refuses UPDATE and DELETE on `events`).
"""

from __future__ import annotations

import os
import threading
from copy import deepcopy
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository

# Aggregates kept per process when CHRONICLE_AGGREGATE_CACHE_SIZE is not set; 0 turns the cache off.
DEFAULT_AGGREGATE_CACHE_SIZE = 1000
# Locks a stream's cache entry is guarded by one of: two streams rarely share one.
STREAM_LOCKS = 256


def project(aggregate: Any, events: Any) -> Any:
    """Apply `events` to `aggregate` (None to start a stream) in order; the aggregate after them.

    The library's project_aggregate without its runtime protocol check per event, which cost
    more than applying the event (typing's Protocol isinstance walks the class every time).
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class WorkspaceRepository(Repository[UUID]):
    """The library's Repository, with the cached path made thread-safe and the cheap projector.

    A load fast-forwards the cached aggregate and copies it under that stream's lock, so a
    command never sees a copy torn by another thread's fast-forward; an error while
    fast-forwarding drops the entry, so a half-applied aggregate is never served.
    A stream's lock is one of a fixed set, picked by its id: taking it costs nothing more
    (the library's own per-stream locks are made, counted and cached on each use). Two streams
    may share a lock, so no get may be nested in another stream's (it could wait on itself);
    a forked process makes a fresh set, not its parent's (one may have been held at the fork).
    """

    _stream_locks = tuple(threading.Lock() for _ in range(STREAM_LOCKS))

    @classmethod
    def renew_stream_locks(cls) -> None:
        """A fresh, unheld set of stream locks: for a forked child, in which a lock another of the
        parent's threads held at the fork would stay held for good."""
        cls._stream_locks = tuple(threading.Lock() for _ in range(STREAM_LOCKS))

    def _lock_of(self, aggregate_id: UUID) -> threading.Lock:
        """The lock that guards this stream's cache entry."""
        return self._stream_locks[hash(aggregate_id) % STREAM_LOCKS]

    def get(  # type: ignore[override]
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: Any = project,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        """The aggregate at `version` (None: now), from the cache when it holds the stream."""
        if not self.cache or version is not None:
            return self._reconstruct_aggregate(aggregate_id, version, projector_func)
        with self._lock_of(aggregate_id):
            try:
                aggregate = self.cache.get(aggregate_id)
            except KeyError:
                aggregate = self._reconstruct_aggregate(aggregate_id, None, projector_func)
                self.cache.put(aggregate_id, aggregate)
            else:
                try:
                    newer = self.event_store.get(originator_id=aggregate_id, gt=aggregate.version)
                    aggregate = projector_func(aggregate, newer)
                except BaseException:
                    self.cache.get(aggregate_id, evict=True)
                    raise
                if aggregate is None:  # pragma: no cover - a cached stream has events
                    raise AggregateNotFoundError(aggregate_id)
            return deepcopy(aggregate)

    def cached_copy(self, aggregate_id: UUID) -> Any | None:
        """A copy of the cached aggregate as it is, not checked against the log; None if not cached.

        For a command's first try: its append names the version it saw, so a stale copy
        cannot write; the caller confirms anything else on a fresh load.
        """
        if not self.cache:
            return None
        with self._lock_of(aggregate_id):
            try:
                return deepcopy(self.cache.get(aggregate_id))
            except KeyError:
                return None

    def evict(self, aggregate_ids: Any) -> None:
        """Drop these aggregates from this process's cache: their personal data was erased.

        Other processes' entries are never served by a read, and what they write for a
        forgotten subject is stored erased (infrastructure.personal_data).
        """
        if not self.cache:
            return
        for aggregate_id in aggregate_ids:
            with self._lock_of(aggregate_id):
                try:
                    self.cache.get(aggregate_id, evict=True)
                except KeyError:
                    pass

    def remember(self, aggregate: Any) -> None:
        """Cache an aggregate whose events were just stored, unless the cache has a later version.

        The caller hands it over: it must not change it afterwards.
        """
        if not self.cache:
            return
        with self._lock_of(aggregate.id):
            try:
                cached = self.cache.get(aggregate.id)
            except KeyError:
                cached = None
            if cached is None or cached.version < aggregate.version:
                self.cache.put(aggregate.id, aggregate)


os.register_at_fork(after_in_child=WorkspaceRepository.renew_stream_locks)
