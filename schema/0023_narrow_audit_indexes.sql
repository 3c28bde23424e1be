-- 0023: narrower audit indexes on `events`, for a smaller log (bench/scale.py: bytes per event).
--
-- A btree's pages fill only when its entries arrive at the page's right-hand end and are
-- narrow. Keyed by (text, position), each type's or session's entries go to the end of its
-- own group, and a wide entry splits its page in two halves, the left one never filled again:
-- such an index took 70-80 bytes an event. Keyed by (hashtext(value), position), an entry is
-- 24 bytes, and PostgreSQL packs groups that grow at their right-hand end to the fillfactor.
-- The queries (service_layer/event_log.py events_sql) match the hash and then the value, so a
-- hash shared by two values only costs a filtered row. Each index below names its query.
-- The planner would take the two matches for independent and expect a value's events to be
-- rare (then it fetches them all and sorts them); a statistics object on each pair tells it
-- that the value decides its hash, so it reads the index in order.

-- Audit ?type= ... ORDER BY position: one type's events in position order.
-- (Replaces events_type_idx on (type, position): 80 bytes an event, now about 31.)
DROP INDEX events_type_idx;
CREATE INDEX events_type_idx ON events (hashtext(type), position) WITH (fillfactor = 100);
CREATE STATISTICS events_type_stats (dependencies) ON type, (hashtext(type)) FROM events;

-- Audit ?session= ... ORDER BY position: one session's events in position order.
-- (Replaces events_session_idx on (metadata->>'session_id', position): 72 bytes an event, now about 46.)
DROP INDEX events_session_idx;
CREATE INDEX events_session_idx ON events (hashtext(metadata->>'session_id'), position)
    WITH (fillfactor = 100) WHERE (metadata->>'session_id') IS NOT NULL;
CREATE STATISTICS events_session_stats (dependencies)
    ON (metadata->>'session_id'), (hashtext(metadata->>'session_id')) FROM events;

-- Audit ?correlation_id=: one request's or workflow's events (then sorted by position).
-- A hash index splits a bucket when it holds fillfactor of its capacity; built at 100, not the
-- default 75 (38 bytes an event, now about 28). The fillfactor of a hash index is fixed when it
-- is built, so it is built again.
DROP INDEX events_correlation_idx;
CREATE INDEX events_correlation_idx ON events USING hash ((metadata->>'correlation_id'))
    WITH (fillfactor = 100) WHERE (metadata->>'correlation_id') IS NOT NULL;

-- Audit ?actor= ... ORDER BY position: one actor's events in position order.
-- Its entries (a short actor id and a position) are narrow, and each actor's group grows at its
-- right-hand end, so its pages may fill completely (32 bytes an event, now about 29). An index's
-- fillfactor on a table with partitions cannot be altered, so it is built again.
DROP INDEX events_actor_idx;
CREATE INDEX events_actor_idx ON events ((metadata->>'actor_id'), position) WITH (fillfactor = 100);

-- Each segment's parts of the indexes built again here are named after them (0022), as plans
-- and operators expect: events_segment_3_type_idx is segment 3's part of events_type_idx.
SELECT name_log_segment_indexes(table_name) FROM log_segment WHERE archived_at IS NULL;

-- The planner estimates each segment's scan from that segment's own statistics, so every
-- segment carries the two statistics objects too: made here for the segments there are, and by
-- prepare_log_segment (which ensure_log_segments and archive restore call) for every later one.
CREATE FUNCTION log_segment_statistics(p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE STATISTICS IF NOT EXISTS %I (dependencies) ON type, (hashtext(type)) FROM %I',
                   p_table || '_type_stats', p_table);
    EXECUTE format('CREATE STATISTICS IF NOT EXISTS %I (dependencies) ON (metadata->>''session_id''),'
                   ' (hashtext(metadata->>''session_id'')) FROM %I', p_table || '_session_stats', p_table);
END;
$$;
REVOKE ALL ON FUNCTION log_segment_statistics(text) FROM PUBLIC;
SELECT log_segment_statistics(table_name) FROM log_segment WHERE archived_at IS NULL;

-- prepare_log_segment (0022) keeps its keys, rights and trigger, now under the name
-- prepare_log_segment_keys; prepare_log_segment adds the statistics after them.
ALTER FUNCTION prepare_log_segment(text) RENAME TO prepare_log_segment_keys;
CREATE FUNCTION prepare_log_segment(p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM prepare_log_segment_keys(p_table);
    PERFORM log_segment_statistics(p_table);
END;
$$;
REVOKE ALL ON FUNCTION prepare_log_segment(text) FROM PUBLIC;
