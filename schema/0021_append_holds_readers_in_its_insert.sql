-- 0021: a leaner append_event. The reader hold (0009) is taken inside the INSERT itself, as
-- the filter of its one source row, instead of by a nested plpgsql call (hold_next_position)
-- that scanned the sequence; the stream's claim stays one statement per expected-version kind.
-- Each event's hash (event_hash, 0016) and what is stored are unchanged.
-- Measured with callgrind on the server process: about 4% fewer instructions per append
-- (inlining event_hash as a SQL expression did not help: each of its ~40 function nodes
-- costs a privilege check and set-up every time its statement starts).
--
-- The hold still comes before the position: the filter takes the shared advisory lock before
-- the row's projection draws nextval, and the INSERT locked `events` (RowExclusiveLock) when
-- it started, before the advisory lock. pg_sequence_last_value() is NULL only before the
-- sequence's first value is drawn: key 1 is then at or below any position the append takes.
CREATE OR REPLACE FUNCTION append_event(p_kind text, p_stream_id text, p_stream_type text, p_expected bigint,
                                        p_metadata jsonb, p_log_name text, p_event_id uuid, p_type text,
                                        p_schema_version integer, p_payload jsonb)
RETURNS TABLE ("position" bigint, version bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    at          timestamptz := clock_timestamp();
    new_version bigint;
    new_hash    bytea;
BEGIN
    IF p_kind = 'version' THEN
        UPDATE streams AS s SET version = s.version + 1, updated_at = now(),
               head_hash = event_hash(s.head_hash, p_event_id, p_stream_id, p_stream_type, s.version + 1, p_type,
                                      p_schema_version, p_payload, p_metadata, at)
        WHERE s.stream_id = p_stream_id AND s.version = p_expected AND s.stream_type = p_stream_type
        RETURNING s.version, s.head_hash INTO new_version, new_hash;
    ELSIF p_kind = 'no_stream' THEN
        INSERT INTO streams AS s (stream_id, stream_type, version, head_hash)
        VALUES (p_stream_id, p_stream_type, 1, event_hash(NULL, p_event_id, p_stream_id, p_stream_type, 1, p_type,
                                                          p_schema_version, p_payload, p_metadata, at))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING s.version, s.head_hash INTO new_version, new_hash;
    ELSE
        INSERT INTO streams AS s (stream_id, stream_type, version, head_hash)
        VALUES (p_stream_id, p_stream_type, 1, event_hash(NULL, p_event_id, p_stream_id, p_stream_type, 1, p_type,
                                                          p_schema_version, p_payload, p_metadata, at))
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + 1, updated_at = now(),
               head_hash = event_hash(s.head_hash, p_event_id, p_stream_id, p_stream_type, s.version + 1, p_type,
                                      p_schema_version, p_payload, p_metadata, at)
        WHERE s.stream_type = EXCLUDED.stream_type
        RETURNING s.version, s.head_hash INTO new_version, new_hash;
    END IF;
    -- No claim (not at the expected version, or another type): no row, no position, no hold.
    RETURN QUERY
    INSERT INTO events AS e (event_id, stream_id, stream_type, version, type, schema_version,
                             payload, metadata, log_name, recorded_at, hash)
    SELECT p_event_id, p_stream_id, p_stream_type, new_version, p_type, p_schema_version,
           p_payload, p_metadata, p_log_name, at, new_hash
    WHERE new_version IS NOT NULL
      AND (pg_try_advisory_xact_lock_shared(log_lock_key(coalesce(pg_sequence_last_value('events_position_seq') + 1, 1)))
           OR hold_log_position())
    RETURNING e.position, e.version;
END;
$$;
