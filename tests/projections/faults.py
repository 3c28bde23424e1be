"""Fault injection for projection tests, and a detector of effects applied twice.

The faults are real database failures provoked on purpose: a CHECK constraint, a trigger that
raises the unique-violation SQLSTATE, one that sleeps past the statement timeout, one that
terminates its own backend during a batch, and a deferred trigger that does so at COMMIT.
A row whose `metadata.fault` names one of them sets it off. Handlers are wrapped (our own
logic under test, so a fake is in order) to raise, or to mark or overflow the row they write.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from infrastructure.event_store import NO_STREAM, EventStore, NewEvent
from projections import documents
from projections.catalog import PROJECTORS
from projections.model import StreamRows

# The one-row-per-stream table each projector writes for every event of a live stream.
MAIN_TABLE = {"chains": "chain", "documents": "document", "agents": "agent"}
PERMANENT = ("raise", "range", "check", "unique")  # fail every time: the event must be parked
TRANSIENT = ("timeout", "kill_batch", "kill_commit")  # fail once: the event must be applied

INSTALL_SQL = """
CREATE TABLE IF NOT EXISTS applied_log (tbl text, stream_id text, last_position bigint);
CREATE OR REPLACE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO applied_log VALUES (TG_TABLE_NAME, to_jsonb(NEW) ->> TG_ARGV[0], NEW.last_position);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CASE NEW.metadata ->> 'fault'
        WHEN 'unique' THEN RAISE EXCEPTION 'injected duplicate' USING ERRCODE = 'unique_violation';
        WHEN 'timeout' THEN PERFORM pg_sleep(3);
        WHEN 'kill_batch' THEN PERFORM pg_terminate_backend(pg_backend_pid());
        ELSE NULL;
    END CASE;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION inject_commit_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.metadata ->> 'fault' = 'kill_commit' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
"""

TABLE_SQL = """
DROP TRIGGER IF EXISTS log_applied ON {t};
CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION log_applied('{key}');
DROP TRIGGER IF EXISTS inject_fault ON {t};
CREATE TRIGGER inject_fault BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION inject_fault();
DROP TRIGGER IF EXISTS inject_commit_fault ON {t};
CREATE CONSTRAINT TRIGGER inject_commit_fault AFTER INSERT OR UPDATE ON {t}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION inject_commit_fault();
ALTER TABLE {t} DROP CONSTRAINT IF EXISTS injected_check;
ALTER TABLE {t} ADD CONSTRAINT injected_check CHECK (metadata ->> 'fault' IS DISTINCT FROM 'check');
"""
KEYS = {"chain": "chain_id", "document": "document_id", "agent": "agent_id"}


def install(pool) -> None:
    """Put the fault triggers, the CHECK and the applied-twice detector on the live snapshot tables
    (again after a rebuild swapped them)."""
    with pool.connection() as conn:
        conn.execute(INSTALL_SQL)
        for table, key in KEYS.items():
            conn.execute(TABLE_SQL.format(t=table, key=key))


def applied_twice(pool) -> list[tuple]:
    """(table, stream, position) written by two committed transactions: an effect applied twice.

    Every event of a live stream rewrites the stream's snapshot row with its own position, once
    per batch; a rolled-back batch leaves no trace here.
    """
    with pool.connection() as conn:
        rows = conn.execute("SELECT tbl, stream_id, last_position FROM applied_log").fetchall()
    counts = Counter((r["tbl"], r["stream_id"], r["last_position"]) for r in rows)
    return [key for key, n in counts.items() if n > 1]


class Injector:
    """Wraps every handler: the event at (stream, version) in `faults` sets off its fault.

    Permanent faults fire on every try, and stay on the stream's row through the later events of
    the same batch; transient ones fire only on the first try. `fired` holds the permanent
    faults that took effect (one whose stream's row is gone by the write cannot go off, and its
    mark may have been copied elsewhere: `masked` names those streams).
    """

    def __init__(self) -> None:
        self.faults: dict[tuple[str, int], str] = {}
        self.tries: Counter = Counter()
        self.fired: set[tuple[str, int]] = set()
        self.armed: dict[str, list[tuple[str, int]]] = {}  # stream -> [(fault, its version)] marked in this batch
        self.masked: set[str] = set()  # streams whose marked row a later event of the batch removed
        self.originals: dict[str, dict[str, Callable]] = {}

    def __enter__(self) -> Injector:
        for name, projector in PROJECTORS.items():
            self.originals[name] = dict(projector.handlers)
            for type_name, handler in projector.handlers.items():
                projector.handlers[type_name] = self._wrap(name, handler)
        return self

    def __exit__(self, *exc) -> None:
        for name, handlers in self.originals.items():
            PROJECTORS[name].handlers.clear()
            PROJECTORS[name].handlers.update(handlers)

    def _wrap(self, projection: str, handler: Callable) -> Callable:
        def wrapped(s: StreamRows, e, out) -> None:
            key = (e.stream_id, e.version)
            kind = self.faults.get(key)
            armed = self.armed.get(e.stream_id, [])
            if armed and e.version <= min(version for _, version in armed):
                armed = self.armed.pop(e.stream_id) and []  # a new try of the batch: nothing marked yet
            if kind is None and not armed:
                return handler(s, e, out)
            if kind is not None:
                self.tries[key] += 1
            if kind == "raise":
                self.fired.add(key)
                raise RuntimeError("injected handler fault")
            handler(s, e, out)
            table = MAIN_TABLE[projection]
            row = s.one(table)
            if row is None:  # no row left to carry the marks: none can go off in this batch
                for _, version in armed:
                    self.fired.discard((e.stream_id, version))
                if self.armed.pop(e.stream_id, None):
                    self.masked.add(e.stream_id)  # a marked row may live on in a tombstone
                return
            # The stream's earlier marks in this batch stay on its rewritten row; this event's own
            # fault is added unless it is transient and already went off. Permanent marks go last,
            # so a permanent fault's metadata wins over a transient one's.
            marks = list(armed)
            if kind is not None and not (kind in TRANSIENT and self.tries[key] > 1):
                marks.append((kind, e.version))
            marks.sort(key=lambda m: m[0] in PERMANENT)
            for mark, version in marks:
                if mark == "range":
                    row = {**row, "last_version": 10**40}  # beyond bigint
                else:
                    row = {**row, "metadata": {**(row.get("metadata") or {}), "fault": mark}}
                if mark in PERMANENT:
                    self.fired.add((e.stream_id, version))
            s.set_one(table, row)
            if marks:
                self.armed[e.stream_id] = marks
        return wrapped


def poison_document_titles(monkeypatch) -> None:
    """Make the documents projection fail on any document.updated whose title is "poison".

    A handler that cannot project one event, as a bug or a bad event would make it.
    """
    original = documents.projector.handlers["document.updated"]

    def poisoned(s, e, out):
        if e.payload.get("title") == "poison":
            raise ValueError("cannot project this")
        original(s, e, out)

    monkeypatch.setitem(documents.projector.handlers, "document.updated", poisoned)


def append_good_and_poisoned(store: EventStore, metadata: dict[str, Any] | None = None) -> tuple[str, str]:
    """Two documents; the second is updated with a "poison" title, then once more.

    With poison_document_titles, the second stream parks and the first projects: (good, bad) ids.
    """
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    for sid in (good, bad):
        store.append(sid, NO_STREAM, [NewEvent("document.created", {
            "namespace": "ns", "document_type": "t", "title": "a", "content": "x", "body": None,
            "metadata": {}, "version": 1})], metadata)
    store.append(bad, 1, [NewEvent("document.updated", {"title": "poison", "change_description": "", "version": 2}),
                          NewEvent("document.updated", {"title": "after", "change_description": "", "version": 3})],
                 metadata)
    return good, bad
