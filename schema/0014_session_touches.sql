-- 0014: the session read model, and rules the domain enforces stated once more by the read tables.

-- Which documents each session touched: one row per (session, document), moved to the last
-- event of the document's stream recorded in that session (created, updated, tagged, untagged,
-- undone, redone, deleted, restored). Kept by the documents projector from each event's
-- metadata.session_id. Liveness comes from the join with document_snapshot, so a deleted
-- document drops out of the read and a restored one comes back without a write here.
CREATE TABLE session_touch (
    session_id      text   NOT NULL,
    document_id     text   NOT NULL,
    touch           text   NOT NULL,   -- the event type of the last touch
    touched_at      timestamptz,
    touched_by      text,
    touched_by_type text,
    last_event_id   uuid   NOT NULL,
    last_version    bigint NOT NULL,
    last_position   bigint NOT NULL CHECK (last_position >= 1),
    PRIMARY KEY (session_id, document_id)
) WITH (fillfactor = 70);
-- GET /v1/sessions/{id}/documents: WHERE session_id = $1 AND last_position < $cursor
-- ORDER BY last_position DESC: a range scan of one session, whatever the log's length.
CREATE INDEX session_touch_session_idx ON session_touch (session_id, last_position DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON session_touch TO chronicle_app;
    END IF;
END
$$;

-- Rules the domain enforces, as CHECK constraints: one comparison per written row, no
-- lookup, so a rebuild (its shadows are LIKE ... INCLUDING ALL) pays nothing measurable.
--   edge:             an edge never joins a node to itself (domain/chain.py: self_edge)
--   document_snapshot, document_version:
--                     a content version counts from 1 (domain/bounds.py: DocumentVersion)
--   active_tag:       a tag points at a content version, so >= 1
--   tag_event:        the version a tag moved to, and from, are content versions (>= 1; null
--                     when untagged or first tagged)
--   agent_execution:  a run's duration is a count, never negative (domain/agent.py: check_count)
ALTER TABLE edge ADD CONSTRAINT edge_not_self CHECK (source_id <> target_id);
ALTER TABLE document_snapshot ADD CONSTRAINT document_snapshot_version_check CHECK (version >= 1);
ALTER TABLE document_version ADD CONSTRAINT document_version_version_check CHECK (version >= 1);
ALTER TABLE active_tag ADD CONSTRAINT active_tag_document_version_check CHECK (document_version >= 1);
ALTER TABLE tag_event ADD CONSTRAINT tag_event_versions_check
    CHECK (document_version >= 1 AND previous_version >= 1);
ALTER TABLE agent_execution ADD CONSTRAINT agent_execution_duration_check CHECK (duration_ms >= 0);
