-- 0026: one statement for the one-event appends of several callers (infrastructure/append_groups.py).
--
-- Under concurrent writers an append's server time is mostly set-up per statement (the function
-- call, each statement's executor, the commit), not per event: in one pgbench run at 8 clients,
-- 4 appends per call of this function wrote 2-3 times the events per second of one append per
-- append_event call (docs/design.md, "Group commit"). A process that has several one-event
-- appends waiting writes them with one call, in one transaction.
--
-- Each append is what append_event (0024) does with it: the stream's claim at the expected
-- version ('version') or as a new stream ('no_stream'), the event hashed onto its stream's chain,
-- the reader hold taken before any position is drawn, the id claimed in log_event_ids. An append
-- whose claim fails (not at the expected version, another stream type) writes nothing and
-- returns no row; the others are written. Any error (an event id already stored) writes none.

CREATE FUNCTION append_batch(p_kinds text[], p_stream_ids text[], p_stream_types text[], p_expected bigint[],
                             p_metadata jsonb[], p_log_names text[], p_event_ids uuid[], p_types text[],
                             p_schema_versions integer[], p_payloads jsonb[])
RETURNS TABLE (event_id uuid, "position" bigint, version bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    at       timestamptz := clock_timestamp();
    n        integer := cardinality(p_stream_ids);
    ords     bigint[];   -- the claimed appends, by their place in the arrays
    versions bigint[];
    hashes   bytea[];
BEGIN
    -- One entry per append in every array, and each stream once: a second event of a stream
    -- would have to chain onto the first, which one statement cannot see.
    IF n IS NULL OR n <> ANY (ARRAY[cardinality(p_kinds), cardinality(p_stream_types), cardinality(p_expected),
                                    cardinality(p_metadata), cardinality(p_log_names), cardinality(p_event_ids),
                                    cardinality(p_types), cardinality(p_schema_versions), cardinality(p_payloads)])
       OR n <> (SELECT count(DISTINCT s) FROM unnest(p_stream_ids) AS s) THEN
        RAISE EXCEPTION 'append_batch takes arrays of one length, each stream once' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Claim each stream's next version and hash its event onto the stream's chain.
    WITH given AS (
        SELECT * FROM unnest(p_kinds, p_stream_ids, p_stream_types, p_expected, p_metadata, p_event_ids, p_types,
                             p_schema_versions, p_payloads) WITH ORDINALITY
            AS g(kind, stream_id, stream_type, expected, metadata, event_id, type, schema_version, payload, ord)),
    moved AS (
        UPDATE streams AS s SET version = s.version + 1, updated_at = now(),
               head_hash = event_hash(s.head_hash, g.event_id, g.stream_id, g.stream_type, s.version + 1, g.type,
                                      g.schema_version, g.payload, g.metadata, at)
        FROM given AS g
        WHERE g.kind = 'version' AND s.stream_id = g.stream_id AND s.version = g.expected
          AND s.stream_type = g.stream_type
        RETURNING g.ord, s.version, s.head_hash),
    made AS (
        INSERT INTO streams AS s (stream_id, stream_type, version, head_hash)
        SELECT g.stream_id, g.stream_type, 1, event_hash(NULL, g.event_id, g.stream_id, g.stream_type, 1, g.type,
                                                         g.schema_version, g.payload, g.metadata, at)
        FROM given AS g WHERE g.kind = 'no_stream'
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING s.stream_id, s.version, s.head_hash),
    claimed AS (
        SELECT mv.ord, mv.version, mv.head_hash FROM moved AS mv
        UNION ALL
        SELECT g.ord, m.version, m.head_hash FROM made AS m JOIN given AS g ON g.stream_id = m.stream_id)
    SELECT array_agg(c.ord ORDER BY c.ord), array_agg(c.version ORDER BY c.ord), array_agg(c.head_hash ORDER BY c.ord)
    INTO ords, versions, hashes
    FROM claimed AS c;
    IF ords IS NULL THEN
        RETURN;  -- no claim: no hold, no position
    END IF;
    PERFORM hold_next_position();
    -- Positions drawn in the order given (after the sort), each event's row from its id's claim.
    RETURN QUERY
    WITH claimed AS (
        SELECT * FROM unnest(ords, versions, hashes) AS c(ord, version, hash)),
    ids AS (
        INSERT INTO log_event_ids AS i (event_id, "position")
        SELECT p_event_ids[c.ord], nextval('events_position_seq') FROM claimed AS c ORDER BY c.ord
        RETURNING i.event_id, i."position")
    INSERT INTO events AS e ("position", event_id, stream_id, stream_type, version, type, schema_version,
                             payload, metadata, log_name, recorded_at, hash)
    SELECT ids."position", ids.event_id, p_stream_ids[c.ord], p_stream_types[c.ord], c.version, p_types[c.ord],
           p_schema_versions[c.ord], p_payloads[c.ord], p_metadata[c.ord], p_log_names[c.ord], at, c.hash
    FROM ids JOIN claimed AS c ON p_event_ids[c.ord] = ids.event_id
    ORDER BY ids."position"
    RETURNING e.event_id, e."position", e.version;
END;
$$;
REVOKE ALL ON FUNCTION append_batch(text[], text[], text[], bigint[], jsonb[], text[], uuid[], text[], integer[],
                                    jsonb[]) FROM PUBLIC;

-- Owned and granted as append_event (0016): the owner may write the log, the application may
-- only call the function. Without the owner role (a managed server), the migrating login keeps it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_writer') THEN
        ALTER FUNCTION append_batch(text[], text[], text[], bigint[], jsonb[], text[], uuid[], text[], integer[],
                                    jsonb[]) OWNER TO chronicle_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        GRANT EXECUTE ON FUNCTION append_batch(text[], text[], text[], bigint[], jsonb[], text[], uuid[], text[],
                                               integer[], jsonb[]) TO chronicle_app;
    END IF;
END;
$$;
