-- 0001: the event store.
-- One append-only `events` table with a global position, a `streams` table with each
-- stream's current version, the registered event types, and two functions: one appends
-- to a stream, one reads the global log without ever skipping a late commit.

-- Positions come from one sequence. They only increase; aborted appends leave holes.
CREATE SEQUENCE events_position_seq AS bigint;

CREATE TABLE streams (
    stream_id   text        PRIMARY KEY,
    stream_type text        NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    position       bigint      PRIMARY KEY DEFAULT nextval('events_position_seq'),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_type    text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    type           text        NOT NULL,
    schema_version integer     NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    -- The notification log this event belongs to: one per eventsourcing application name.
    log_name       text        NOT NULL DEFAULT 'chronicle',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);
ALTER SEQUENCE events_position_seq OWNED BY events.position;

-- Indexes for the auditors' questions: by type, actor, session, correlation and time.
-- (By stream is served by events_stream_version_key.)
CREATE INDEX events_type_idx        ON events (type, position);
CREATE INDEX events_log_idx         ON events (log_name, position);
CREATE INDEX events_actor_idx       ON events ((metadata->>'actor_id'), position);
CREATE INDEX events_session_idx     ON events ((metadata->>'session_id'), position);
CREATE INDEX events_correlation_idx ON events ((metadata->>'correlation_id'), position);
CREATE INDEX events_causation_idx   ON events ((metadata->>'causation_id'));
CREATE INDEX events_recorded_at_idx ON events (recorded_at);

-- History is never rewritten: the database itself refuses UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed on events', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Every registered event type, with its schema version and JSON Schema.
CREATE TABLE event_definitions (
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    stream_type    text        NOT NULL,
    json_schema    jsonb       NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (type, schema_version)
);


-- append_to_stream: claim versions, hold back readers, insert, notify. All or nothing.
--   expected_version: NULL means "any", 0 means "no stream yet", N means "at version N".
--   outcome: 'appended', 'conflict' (stream_version is then the actual version)
--            or 'duplicate' (these event ids are already stored; nothing is written).
--   p_notify: false when the caller sends the wake-up itself after commit. A NOTIFY in
--            the append's own transaction takes a database-wide lock held through the
--            commit's WAL flush, so it serialises every committing writer.
CREATE FUNCTION append_to_stream(
    p_stream_id        text,
    p_stream_type      text,
    p_expected_version bigint,
    p_event_ids        uuid[],
    p_types            text[],
    p_schema_versions  integer[],
    p_payloads         jsonb[],
    p_metadata         jsonb,
    p_log_name         text,
    p_notify           boolean DEFAULT true
) RETURNS TABLE (outcome text, stream_version bigint, positions bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    n           bigint := cardinality(p_event_ids);
    new_version bigint;
    known_type  text;
    stored      boolean;
BEGIN
    -- 1. A retried append whose events are already stored writes nothing.
    --    EXECUTE plans the probe for the table as it is now. A session's cached plan, made
    --    while `events` was small, seq-scans it and keeps doing so as it grows (measured:
    --    3.6M rows read for 2.7k appends to a new store).
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM events WHERE event_id = ANY ($1))' INTO stored USING p_event_ids;
    IF stored THEN
        RETURN QUERY SELECT 'duplicate', NULL::bigint, NULL::bigint[];
        RETURN;
    END IF;

    -- 2. Claim the versions. The stream's row lock orders writers of one stream; a writer
    --    whose expected version has gone gets a conflict before it takes any position.
    IF p_expected_version IS NULL THEN
        INSERT INTO streams AS s (stream_id, stream_type, version)
        VALUES (p_stream_id, p_stream_type, n)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + n, updated_at = now()
        RETURNING s.version, s.stream_type INTO new_version, known_type;
    ELSIF p_expected_version = 0 THEN
        INSERT INTO streams AS s (stream_id, stream_type, version)
        VALUES (p_stream_id, p_stream_type, n)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING s.version, s.stream_type INTO new_version, known_type;
    ELSE
        UPDATE streams AS s SET version = s.version + n, updated_at = now()
        WHERE s.stream_id = p_stream_id AND s.version = p_expected_version
        RETURNING s.version, s.stream_type INTO new_version, known_type;
    END IF;

    IF new_version IS NULL THEN
        -- The conflicting writer may have been our own earlier try: report that as a duplicate.
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM events WHERE event_id = ANY ($1))' INTO stored USING p_event_ids;
        IF stored THEN
            RETURN QUERY SELECT 'duplicate', NULL::bigint, NULL::bigint[];
        ELSE
            RETURN QUERY SELECT 'conflict',
                coalesce((SELECT s.version FROM streams s WHERE s.stream_id = p_stream_id), 0),
                NULL::bigint[];
        END IF;
        RETURN;
    END IF;
    IF known_type <> p_stream_type THEN
        RAISE EXCEPTION 'stream % is a % stream, not a % stream', p_stream_id, known_type, p_stream_type
            USING ERRCODE = 'CH001';
    END IF;

    -- 3. Hold back readers: a shared advisory lock keyed at the next position, taken before
    --    any position is. A reader never reads at or past the smallest key still held.
    PERFORM pg_advisory_xact_lock_shared(CASE WHEN is_called THEN last_value + 1 ELSE last_value END)
    FROM events_position_seq;

    -- 4. Insert the events, versions following on from the claimed ones.
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO events (event_id, stream_id, stream_type, version, type, schema_version,
                            payload, metadata, log_name)
        SELECT e.event_id, p_stream_id, p_stream_type, new_version - n + e.ord, e.type,
               e.schema_version, e.payload, p_metadata, p_log_name
        FROM unnest(p_event_ids, p_types, p_schema_versions, p_payloads)
             WITH ORDINALITY AS e(event_id, type, schema_version, payload, ord)
        ORDER BY e.ord
        RETURNING events.position
    )
    SELECT 'appended', new_version, array_agg(inserted.position ORDER BY inserted.position)
    FROM inserted;

    -- 5. Wake listeners once this commits (unless the caller wakes them after commit).
    IF p_notify THEN
        PERFORM pg_notify('chronicle_events', p_log_name);
    END IF;
END;
$$;


-- safe_position: the highest position below which no event can still appear.
-- Reads the sequence first, then the held append locks: any append that took a position
-- at or below last_value took its lock before that, so either it still holds the lock or
-- it has finished and is visible to the next statement's snapshot.
-- STABLE so that `position <= safe_position()` in a query is an index condition computed
-- once per scan; as VOLATILE it was a filter re-run (a pg_locks scan) for every row.
CREATE FUNCTION safe_position() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    taken   bigint;
    blocked bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO taken
    FROM events_position_seq;

    -- Single-bigint advisory keys show with objsubid = 1; Chronicle's other advisory
    -- locks use the two-int form, so they never mix in here.
    SELECT min((l.classid::bigint << 32) | l.objid::bigint) INTO blocked
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

    RETURN least(taken, blocked - 1);
END;
$$;


-- read_log: events after a checkpoint, up to the safe position, in position order.
-- The SELECT runs as its own statement after safe_position(), so it sees every append
-- that finished before the locks were read. Call it outside REPEATABLE READ transactions.
CREATE FUNCTION read_log(
    p_after    bigint,
    p_limit    integer,
    p_types    text[] DEFAULT NULL,
    p_log_name text   DEFAULT NULL
) RETURNS SETOF events LANGUAGE plpgsql AS $$
DECLARE
    safe bigint := safe_position();
BEGIN
    RETURN QUERY
    SELECT * FROM events e
    WHERE e.position > p_after AND e.position <= safe
      AND (p_types IS NULL OR e.type = ANY (p_types))
      AND (p_log_name IS NULL OR e.log_name = p_log_name)
    ORDER BY e.position
    LIMIT p_limit;
END;
$$;


-- log_blockers: the open transactions holding the log back, oldest position first.
CREATE FUNCTION log_blockers() RETURNS TABLE (
    pid integer, held_position bigint, xact_start timestamptz, state text,
    application_name text, query text
) LANGUAGE sql AS $$
    SELECT l.pid, (l.classid::bigint << 32) | l.objid::bigint, a.xact_start, a.state,
           a.application_name, a.query
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY 2;
$$;
