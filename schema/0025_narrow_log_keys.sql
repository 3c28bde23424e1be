-- 0025: a smaller log (bench/scale.py: bytes per event), by two keys (docs/log-segments.md,
-- "Reading an event by its id" and "Reading a stream").
--
-- 1. Each segment's own unique (event_id) index (29 bytes an event) is dropped: a read by event
--    id finds the position in log_event_ids (events_event_id_key), then the row by events_pkey.
-- 2. Each segment's own unique (stream_id, version) index (88 bytes an event) is replaced by one
--    partitioned index on (hashtext(stream_id), version), about 28 bytes an event. The stream's
--    row claim in the append functions keeps (stream_id, version) unique across the log.

-- Stream reads: WHERE hashtext(stream_id) = hashtext($1) AND stream_id = $1 ORDER BY version
-- (event_log.stream_events, store_reads.read_stream, the library's recorder, proofs' previous
-- event, verify and archive's stream heads). Built on every attached segment here, and by
-- ATTACH on every segment made or restored later.
CREATE INDEX events_stream_idx ON events (hashtext(stream_id), version) WITH (fillfactor = 100);

-- The planner would take the hash and the id for independent matches and expect a stream to have
-- almost no events; this tells it that the id decides its hash (as 0023 does for type, session).
CREATE STATISTICS events_stream_stats (dependencies) ON stream_id, (hashtext(stream_id)) FROM events;

-- The two keys each segment had of its own (0022), on every attached segment.
DO $$
DECLARE
    segment text;
BEGIN
    FOR segment IN SELECT table_name FROM log_segment WHERE archived_at IS NULL ORDER BY segment_number LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', segment, segment || '_event_id_key');
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', segment, segment || '_stream_version_key');
    END LOOP;
END;
$$;

-- A segment's parts of events_stream_idx named after it (events_segment_3_stream_idx).
SELECT name_log_segment_indexes(table_name) FROM log_segment WHERE archived_at IS NULL;

-- Later segments: no keys of their own (the partitioned indexes come with ATTACH).
-- prepare_log_segment_keys (0022, renamed by 0023) is made again without its two ADD CONSTRAINT
-- statements; the TRUNCATE trigger and rights stay as they were.
DO $$
DECLARE
    definition text := pg_get_functiondef('prepare_log_segment_keys(text)'::regprocedure);
    without    text := regexp_replace(definition, '\s*EXECUTE format\(''ALTER TABLE %I ADD CONSTRAINT [^;]*;', '', 'g');
BEGIN
    IF length(definition) - length(without) < 200 OR without LIKE '%ADD CONSTRAINT%' THEN
        RAISE EXCEPTION 'prepare_log_segment_keys is not the function 0022 made';
    END IF;
    EXECUTE without;
END;
$$;

-- Every later segment's statistics: log_segment_statistics (0023, which prepare_log_segment
-- calls) keeps the type's and session's under a new name and adds the stream's.
ALTER FUNCTION log_segment_statistics(text) RENAME TO log_segment_audit_statistics;
CREATE FUNCTION log_segment_statistics(p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM log_segment_audit_statistics(p_table);
    EXECUTE format('CREATE STATISTICS IF NOT EXISTS %I (dependencies) ON stream_id, (hashtext(stream_id)) FROM %I',
                   p_table || '_stream_stats', p_table);
END;
$$;
REVOKE ALL ON FUNCTION log_segment_statistics(text) FROM PUBLIC;
SELECT log_segment_statistics(table_name) FROM log_segment WHERE archived_at IS NULL;
