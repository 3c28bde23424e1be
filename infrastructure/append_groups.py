"""Group commit: the one-event appends that a process's threads make at the same moment, written
together in one statement and one transaction (append_batch, schema/0026).

Under concurrent writers most of an append's server time is set-up per statement and per commit,
not per event (docs/design.md, "Group commit"). A thread whose append may join a group queues
it. If fewer than its `leaders` groups are being written (`chronicle_append_groups`, default
LEADERS), it leads: it takes the waiting appends (each
stream once, at most `chronicle_append_group_max`), writes them, hands each caller its outcome,
and goes on until its own append is written; then the oldest waiting caller that does not lead
takes its place. A caller alone is written with
append_event, as before. Each append stays all or nothing and is checked against its own
expected version; when a group's statement fails (an event id already stored, a lost
connection), none of it is written and every caller appends alone, so each gets its own answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from infrastructure.append_statement import APPEND_SQL, array_literal

logger = logging.getLogger(__name__)

# Several appends: the arrays of append_batch, as literals (array_literal).
APPEND_GROUP_SQL = """
    SELECT * FROM append_batch(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[]::jsonb[], %s::text[],
                               %s::uuid[], %s::text[], %s::int[], %s::text[]::jsonb[])"""

# What became of a queued append, other than its (position, version) row.
REFUSED = "refused"  # written with the others, but its claim failed: not at its version, or another type
ALONE = "alone"  # the group's statement failed: nothing of it was written, append it on its own
# Where append_event's parameters (append_statement.py) hold the stream id and the event id.
_STREAM, _EVENT_ID = 1, 6
# Groups written at once: while one waits for its commit to reach the disk, another is written.
LEADERS = 2


class _Waiting:
    """One queued append: its append_event parameters, what became of it, whether it leads."""

    __slots__ = ("lead", "outcome", "params", "wake")

    def __init__(self, params: tuple[Any, ...]) -> None:
        self.params = params
        self.outcome: tuple[int, int] | str | None = None
        self.lead = False  # it holds one of the leaders' places: it writes groups
        self.wake = threading.Event()


class AppendGroups:
    """The queue of one process's one-event appends, and the writing of them in groups."""

    def __init__(self, pool: ConnectionPool, max_size: int, leaders: int = LEADERS) -> None:
        self.pool = pool
        self.max_size = max_size
        self.max_leaders = leaders
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._leaders = 0
        self.groups_written = 0  # groups of more than one append: how often grouping paid
        self.largest = 0

    def append(self, params: tuple[Any, ...]) -> tuple[int, int] | str:
        """Write one append (append_event's parameters) with whatever else is waiting.

        Returns its (position, version), REFUSED, or ALONE, once its group committed.
        """
        me = _Waiting(params)
        with self._lock:
            self._queue.append(me)
            if self._leaders < self.max_leaders:
                self._leaders += 1
                me.lead = True
        while not me.lead:
            me.wake.wait()
            me.wake.clear()
            with self._lock:
                if not me.lead and me.outcome is not None:
                    return me.outcome
        try:
            while me.outcome is None:
                group = self._take()
                if group:
                    self._write(group)
                else:  # another leader is writing it
                    me.wake.wait()
                    me.wake.clear()
        finally:
            self._hand_over(me)
        return me.outcome

    def _take(self) -> list[_Waiting]:
        """The oldest waiting appends, each stream once, at most max_size; off the queue."""
        group: list[_Waiting] = []
        streams: set[str] = set()
        with self._lock:
            for waiting in self._queue:
                if waiting.params[_STREAM] not in streams:
                    streams.add(waiting.params[_STREAM])
                    group.append(waiting)
                    if len(group) == self.max_size:
                        break
            taken = set(map(id, group))
            self._queue = [w for w in self._queue if id(w) not in taken]
        return group

    def _hand_over(self, me: _Waiting) -> None:
        """Pass `me`'s place as a leader to the oldest waiting caller that has none, or give it up."""
        with self._lock:
            me.lead = False
            heir = next((w for w in self._queue if not w.lead), None)
            if heir is None:
                self._leaders -= 1
            else:
                heir.lead = True
                heir.wake.set()

    def _write(self, group: Sequence[_Waiting]) -> None:
        """Write one group in one statement; give every member its outcome, and wake it."""
        outcomes: dict[Any, tuple[int, int]] | None = None
        try:
            with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                if len(group) == 1:
                    rows = cur.execute(APPEND_SQL[True], group[0].params).fetchall()
                    outcomes = {group[0].params[_EVENT_ID]: rows[0]} if rows else {}
                else:
                    columns = list(zip(*(w.params for w in group)))
                    params = [array_literal(map(str, column)) for column in columns]
                    rows = cur.execute(APPEND_GROUP_SQL, params).fetchall()
                    outcomes = {event_id: (position, version) for event_id, position, version in rows}
                    self.groups_written += 1
                    self.largest = max(self.largest, len(group))
        except Exception:
            logger.debug("a group of %d appends failed; each appends alone", len(group), exc_info=True)
        finally:  # even when interrupted: no member may wait for ever
            for waiting in group:
                waiting.outcome = ALONE if outcomes is None else outcomes.get(waiting.params[_EVENT_ID], REFUSED)
                waiting.wake.set()
