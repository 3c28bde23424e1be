-- 0024: a cheaper append (bench/append.py; numbers in docs/log-segments.md, "Measured").
--
-- The server's cost of an append is mostly set-up per statement: every function node of an
-- expression is looked up and its EXECUTE right checked each time its statement starts, and each
-- statement and trigger call starts an executor of its own. So:
-- 1. The append functions claim each event's id in the statement that inserts the event: the
--    INSERT into log_event_ids is the source of the INSERT into events, so the id is claimed
--    before its row is written, as the row trigger of 0022 did, and a second claim of an id fails
--    on the same constraint, events_event_id_key. The row trigger goes: a trigger on the log, even
--    one whose WHEN is false, costs more than the claim itself. Whoever writes `events` other than
--    through these functions (only the schema's owner may) claims the ids itself (bench/_db.py).
-- 2. event_hash computes the same bytes with 29 function nodes instead of 41, and is a SQL
--    function that the planner inlines into the append's statement (STABLE, as convert_to is).

-- An event's hash, as 0016 defined it (docs/tamper-evidence.md). Each text is its UTF-8 length
-- (4 bytes, big-endian) then its UTF-8 bytes: array_send of a one-dimensional bytea[] writes a
-- 20-byte header (dimensions, flags, element type, length, lower bound) and then exactly that
-- for each element, so its bytes from the 21st on are the texts with their lengths, in order.
CREATE OR REPLACE FUNCTION event_hash(p_previous bytea, p_event_id uuid, p_stream_id text, p_stream_type text,
                                      p_version bigint, p_type text, p_schema_version integer, p_payload jsonb,
                                      p_metadata jsonb, p_recorded_at timestamptz) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256('\x6368726f6e69636c652f6576656e742f31'::bytea  -- 'chronicle/event/1'
        || coalesce(p_previous, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
        || uuid_send(p_event_id)
        || substr(array_send(ARRAY[convert_to(p_stream_id, 'UTF8'), convert_to(p_stream_type, 'UTF8')]), 21)
        || int8send(p_version)
        || substr(array_send(ARRAY[convert_to(p_type, 'UTF8')]), 21)
        || int4send(p_schema_version)
        || substr(array_send(ARRAY[convert_to(p_payload::text, 'UTF8'), convert_to(p_metadata::text, 'UTF8')]), 21)
        || int8send((extract(epoch FROM p_recorded_at) * 1000000)::bigint))
$$;

-- Append one event (0021), its id claimed in the insert: the claim's source row is filtered by
-- the reader hold (taken before the position is drawn, as in 0021), draws the position, and is
-- the source of the event's row.
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
    WITH claimed AS (
        INSERT INTO log_event_ids AS i (event_id, "position")
        SELECT p_event_id, nextval('events_position_seq')
        WHERE new_version IS NOT NULL
          AND (pg_try_advisory_xact_lock_shared(log_lock_key(coalesce(pg_sequence_last_value('events_position_seq') + 1, 1)))
               OR hold_log_position())
        RETURNING i."position")
    INSERT INTO events AS e ("position", event_id, stream_id, stream_type, version, type, schema_version,
                             payload, metadata, log_name, recorded_at, hash)
    SELECT claimed."position", p_event_id, p_stream_id, p_stream_type, new_version, p_type, p_schema_version,
           p_payload, p_metadata, p_log_name, at, new_hash
    FROM claimed
    RETURNING e.position, e.version;
END;
$$;

-- Append several events to one stream (0016), their ids claimed in the insert: positions are
-- drawn in the order given (after the sort), and each event's row comes from its claim.
CREATE OR REPLACE FUNCTION append_events(p_kind text, p_stream_id text, p_stream_type text, p_expected bigint,
                                         p_metadata jsonb, p_log_name text, p_event_ids uuid[], p_types text[],
                                         p_schema_versions integer[], p_payloads jsonb[])
RETURNS TABLE ("position" bigint, version bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n       integer := cardinality(p_event_ids);
    claimed record;
    at      timestamptz;
    times   timestamptz[] := '{}';  -- each event's own time, as recorded_at's default gave
    hashes  bytea[] := '{}';
    head    bytea;
BEGIN
    SELECT * INTO claimed FROM claim_versions(p_kind, p_stream_id, p_stream_type, p_expected, n);
    IF claimed.new_version IS NULL THEN
        RETURN;
    END IF;
    PERFORM hold_next_position();
    head := claimed.previous;
    FOR i IN 1..n LOOP
        at := clock_timestamp();
        times := times || at;
        head := event_hash(head, p_event_ids[i], p_stream_id, p_stream_type, claimed.new_version - n + i,
                           p_types[i], p_schema_versions[i], p_payloads[i], p_metadata, at);
        hashes := hashes || head;
    END LOOP;
    RETURN QUERY
    WITH given AS (
        SELECT * FROM unnest(p_event_ids, p_types, p_schema_versions, p_payloads, times, hashes)
                      WITH ORDINALITY AS x(event_id, type, schema_version, payload, at, hash, ord)),
    ids AS (
        INSERT INTO log_event_ids AS i (event_id, "position")
        SELECT given.event_id, nextval('events_position_seq') FROM given ORDER BY given.ord
        RETURNING i.event_id, i."position")
    INSERT INTO events AS e ("position", event_id, stream_id, stream_type, version, type, schema_version,
                             payload, metadata, log_name, recorded_at, hash)
    SELECT ids."position", g.event_id, p_stream_id, p_stream_type, claimed.new_version - n + g.ord, g.type,
           g.schema_version, g.payload, p_metadata, p_log_name, g.at, g.hash
    FROM ids JOIN given AS g ON g.event_id = ids.event_id
    ORDER BY ids."position"
    RETURNING e.position, e.version;
    UPDATE streams SET head_hash = head WHERE stream_id = p_stream_id;
END;
$$;

DROP TRIGGER events_claim_event_id ON events;
DROP FUNCTION claim_event_id();
