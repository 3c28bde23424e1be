-- 0020: reads that stay bounded as the log grows. Every index below names the query it serves;
-- the indexes that served none, or served a read that now goes by position, are dropped.

-- Audit ?since= / ?until= (api/routes_audit.py) become position bounds: log_position_at(t) is
-- the first position recorded at or after t, found by a binary search over events_pkey
-- (about 30 probes at 100M events). Positions and recorded_at are drawn together as each row
-- is inserted, so the log is in recorded_at order up to the skew of concurrent inserts; the
-- caller widens the bound by a margin for that skew and keeps the recorded_at filter, so the
-- answer stays exact. The recorded_at index served only those filters.
CREATE FUNCTION log_position_at(p_at timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    lo bigint;
    hi bigint;
    mid bigint;
    found_position bigint;
    found_at timestamptz;
BEGIN
    SELECT min(position), max(position) + 1 INTO lo, hi FROM events;
    IF lo IS NULL THEN
        RETURN 1;
    END IF;
    -- The answer lies in [lo, hi]; hi = head + 1 means nothing was recorded at or after p_at.
    WHILE lo < hi LOOP
        mid := lo + (hi - lo) / 2;
        SELECT e.position, e.recorded_at INTO found_position, found_at
        FROM events e WHERE e.position >= mid ORDER BY e.position LIMIT 1;
        IF found_at >= p_at THEN
            hi := mid;
        ELSE
            lo := found_position + 1;
        END IF;
    END LOOP;
    RETURN lo;
END;
$$;

DROP INDEX IF EXISTS events_recorded_at_idx;

-- Lookups of one id in the log's metadata hold only the events that carry it, as hash indexes
-- (a 4-byte hash per event instead of the 36-character id): an id names a handful of events,
-- which the query then puts in position order.
--   effects of an event: WHERE metadata->>'causation_id' = $1       -> events_causation_idx
--   a command's events:  WHERE metadata->>'command_id' = $1 AND ... -> events_command_idx
--   audit ?correlation_id= (one request's or workflow's events)     -> events_correlation_idx
-- An equality on the field implies it is not null, so the partial indexes serve these queries.
DROP INDEX IF EXISTS events_causation_idx;
CREATE INDEX events_causation_idx ON events USING hash ((metadata->>'causation_id'))
    WHERE (metadata->>'causation_id') IS NOT NULL;
DROP INDEX IF EXISTS events_command_idx;
CREATE INDEX events_command_idx ON events USING hash ((metadata->>'command_id'))
    WHERE (metadata->>'command_id') IS NOT NULL;
DROP INDEX IF EXISTS events_correlation_idx;
CREATE INDEX events_correlation_idx ON events USING hash ((metadata->>'correlation_id'))
    WHERE (metadata->>'correlation_id') IS NOT NULL;
-- Audit ?session= ... ORDER BY position: a session has many events, so its index keeps the order.
DROP INDEX IF EXISTS events_session_idx;
CREATE INDEX events_session_idx ON events ((metadata->>'session_id'), position)
    WHERE (metadata->>'session_id') IS NOT NULL;
-- (log_name, position) served reads of one application's notification log. A Chronicle
-- database holds one log ('chronicle'), so events_pkey serves them as well; 40 bytes an event.
DROP INDEX IF EXISTS events_log_idx;
-- Positions and Chronicle's UUIDv7 event ids only grow: their pages may fill completely.
ALTER INDEX events_pkey SET (fillfactor = 100);
ALTER INDEX events_event_id_key SET (fillfactor = 100);

-- Documents, no filter, ORDER BY created_position DESC.
CREATE INDEX document_position_idx ON document (created_position DESC);

-- Documents ?namespace= ORDER BY created_position DESC: the (namespace, type, ...) index gave
-- no order for a namespace alone. (namespace, type) filters keep document_ns_type_idx.
CREATE INDEX document_namespace_idx ON document (namespace, created_position DESC);

-- Documents ?tag= ORDER BY created_position DESC: the sort key now lives beside the tag, so
-- the page is read in order from (tag, created_position) and joined a page at a time.
ALTER TABLE active_tag ADD COLUMN created_position bigint;
UPDATE active_tag t SET created_position = d.created_position FROM document d
WHERE d.document_id = t.document_id;
CREATE INDEX active_tag_order_idx ON active_tag (tag, created_position DESC);

-- Agent and chain lists ORDER BY last_position DESC, alone or ?name=.
CREATE INDEX agent_position_idx ON agent (last_position DESC);
CREATE INDEX chain_position_idx ON chain (last_position DESC);
DROP INDEX IF EXISTS agent_name_idx;
CREATE INDEX agent_name_idx ON agent (name, last_position DESC);
DROP INDEX IF EXISTS chain_name_idx;
CREATE INDEX chain_name_idx ON chain (name, last_position DESC);

-- Retention (`chronicle prune`, projections/retention.py): whether a body is still referenced
-- by a version that keeps its body.
CREATE INDEX document_version_body_idx ON document_version (body_hash);
-- Bodies retention removed, so that `chronicle verify` does not count them as missing.
CREATE TABLE document_body_pruned (
    body_hash text PRIMARY KEY,
    pruned_at timestamptz NOT NULL DEFAULT now()
);
