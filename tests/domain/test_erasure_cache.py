"""A process that still caches an aggregate of a forgotten subject cannot bring its text back.

The workspace below caches the document (with its text in memory); another process (here, a
store on a pool of its own) forgets the subject. The cached copy is not evicted there, so its
next undo appends the old state and a snapshot from memory: both must be stored erased.
"""

from __future__ import annotations

import uuid

from domain import commands as c
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from service_layer.erasure import forget_subject


def test_a_stale_cached_aggregate_writes_a_forgotten_subjects_text_erased(workspace, domain_database_url, db):
    import service_layer.operator_events  # noqa: F401 - registers subject.forgotten

    subject = f"carol-{uuid.uuid4().hex[:8]}"
    context = c.CommandContext(actor_id="svc", actor_type="service", subject_id=subject)
    made = workspace.handle(c.CreateDocument(namespace="t", document_type="llm_interaction", title="Chat",
                                             content=f"{subject} first words"), context)
    document_id = uuid.UUID(made.stream_id)
    workspace.handle(c.UpdateDocument(document_id=document_id, content=f"{subject} second words"),
                     c.CommandContext(actor_id="svc", actor_type="service"))
    assert workspace.repository.cached_copy(document_id).content == f"{subject} second words"

    pool = create_pool(domain_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2))
    try:
        done = forget_subject(EventStore(pool), subject, actor_id="dpo", actor_type="user")
    finally:
        pool.close()
    assert done.key_destroyed and done.streams == [made.stream_id]
    assert workspace.repository.cached_copy(document_id).content == f"{subject} second words"  # still in memory

    undone = workspace.handle(c.Undo(stream_id=document_id), c.CommandContext(actor_id="svc", actor_type="service"))
    assert undone.version == 3  # a snapshot is due (every 3 events): taken from the cached aggregate

    stored = db.execute("SELECT string_agg(payload::text, ' ') AS t FROM events WHERE stream_id = %s",
                        (made.stream_id,)).fetchone()["t"]
    snapshots = db.execute("SELECT coalesce(string_agg(state::text, ' '), '') AS t FROM snapshots"
                           " WHERE stream_id = %s", (made.stream_id,)).fetchone()["t"]
    assert snapshots, "the undo took a snapshot of the cached aggregate"
    assert subject + " " not in stored + snapshots
    assert workspace.state_at(made.stream_id, version=3).state["content"] == "[erased]"
    history = workspace.history(made.stream_id)
    assert [e.payload.get("content") for e in history[:2]] == ["[erased]", "[erased]"]
    assert history[2].payload["state"]["content"] == "[erased]"
