-- 0022: the log in segments (docs/log-segments.md). `events` becomes a table partitioned by
-- range of position; each partition is a segment, events_segment_<n>. The table as it was
-- becomes segment 0, attached without a rewrite; later segments are made ahead of need by
-- ensure_log_segments(), which the workers' tick and `chronicle migrate` call.

-- How long a segment is (positions) and how far past the next position segments stand ready.
CREATE TABLE log_segment_plan (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    segment_size   bigint NOT NULL DEFAULT 1000000 CHECK (segment_size >= 1),
    segments_ahead integer NOT NULL DEFAULT 2 CHECK (segments_ahead BETWEEN 1 AND 100)
);
INSERT INTO log_segment_plan DEFAULT VALUES;

-- Every segment the log has had, attached or archived. Its primary key serves "the last
-- segment" (ensure_log_segments) and the ranges' lookups; a log has a few hundred at most.
CREATE TABLE log_segment (
    segment_number integer PRIMARY KEY CHECK (segment_number >= 0),
    table_name     text NOT NULL UNIQUE,
    first_position bigint NOT NULL,                  -- inclusive
    end_position   bigint NOT NULL,                  -- exclusive
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    archived_at    timestamptz,                      -- set while the segment lives only in files
    archive_name   text,                             -- the archive's manifest file name
    event_count    bigint,
    data_sha256    text,
    first_hash     bytea,
    last_hash      bytea,
    CHECK (end_position >= first_position),
    CHECK ((archived_at IS NULL) = (archive_name IS NULL))
);

-- A row trigger on every segment claims the event's id first; a second claim of the same id,
-- from any connection, waits for the first and then fails on events_event_id_key.
CREATE FUNCTION claim_event_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log_event_ids (event_id, position) VALUES (NEW.event_id, NEW.position);
    RETURN NEW;
END;
$$;

-- A segment's own keys, rights and TRUNCATE trigger (row triggers and the parent's indexes
-- come with ATTACH). Per segment: (stream_id, version) unique, which the stream's row claim in
-- the append functions already makes true across segments; event_id unique, which serves
-- lookups of an event by id (log_event_ids holds it across segments).
CREATE FUNCTION prepare_log_segment(p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I UNIQUE (event_id) WITH (fillfactor = 100)',
                   p_table, p_table || '_event_id_key');
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I UNIQUE (stream_id, version)',
                   p_table, p_table || '_stream_version_key');
    EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable()', p_table);
    EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', p_table);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        EXECUTE format('REVOKE ALL ON %I FROM chronicle_app', p_table);
        EXECUTE format('GRANT SELECT ON %I TO chronicle_app', p_table);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_writer') THEN
        EXECUTE format('REVOKE ALL ON %I FROM chronicle_writer', p_table);  -- appends go through `events`
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION prepare_log_segment(text) FROM PUBLIC;

-- After ATTACH: a segment's parts of the log's indexes are named after them (events_pkey ->
-- events_segment_3_pkey), so that plans name the same index in every segment.
CREATE FUNCTION name_log_segment_indexes(p_table text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT c.relname AS child, p.relname AS parent
                FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                JOIN pg_inherits h ON h.inhrelid = i.indexrelid JOIN pg_class p ON p.oid = h.inhparent
                WHERE i.indrelid = p_table::regclass LOOP
        IF part.child <> p_table || substr(part.parent, length('events') + 1) THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', part.child, p_table || substr(part.parent, length('events') + 1));
        END IF;
    END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION name_log_segment_indexes(text) FROM PUBLIC;

-- The table as it was becomes segment 0: [MINVALUE, next position).
DO $$
DECLARE
    next_position bigint;
    i             text;
BEGIN
    LOCK TABLE events IN ACCESS EXCLUSIVE MODE;  -- no append between reading the sequence and the bound
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_position
    FROM events_position_seq;
    ALTER SEQUENCE events_position_seq OWNED BY NONE;
    ALTER TABLE events RENAME TO events_segment_0;
    FOREACH i IN ARRAY ARRAY['pkey', 'event_id_key', 'stream_version_key', 'type_idx', 'actor_idx',
                             'session_idx', 'causation_idx', 'command_idx', 'correlation_idx'] LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', 'events_' || i, 'events_segment_0_' || i);
    END LOOP;
    DROP TRIGGER events_no_update_or_delete ON events_segment_0;  -- the parent's clone replaces it
    -- A valid CHECK that implies the bound: ATTACH then does not scan the table again.
    EXECUTE format('ALTER TABLE events_segment_0 ADD CONSTRAINT events_segment_0_range CHECK (position < %s)',
                   next_position);
    INSERT INTO log_segment (segment_number, table_name, first_position, end_position)
    VALUES (0, 'events_segment_0', least(1, next_position), next_position);
END;
$$;

-- Every event id the log has recorded, archived segments' too: an event id is unique across the
-- whole log (a unique index on `events` must include the position). The constraint keeps the
-- name the store's idempotent retry looks for (infrastructure/store_appends.py); its index also
-- serves "where was this event" for an archived one (410 naming the archive, api/routes_log.py).
CREATE TABLE log_event_ids (
    event_id   uuid NOT NULL,
    "position" bigint NOT NULL,
    CONSTRAINT events_event_id_key PRIMARY KEY (event_id) WITH (fillfactor = 100)
);

INSERT INTO log_event_ids (event_id, position) SELECT event_id, position FROM events_segment_0;

-- The same immutability as the events (0001) for the ids.
CREATE TRIGGER log_event_ids_no_update_or_delete BEFORE UPDATE OR DELETE ON log_event_ids
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER log_event_ids_no_truncate BEFORE TRUNCATE ON log_event_ids
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();


CREATE TABLE events (
    "position"     bigint NOT NULL DEFAULT nextval('events_position_seq'),
    event_id       uuid NOT NULL,
    stream_id      text NOT NULL,
    stream_type    text NOT NULL,
    version        bigint NOT NULL,
    type           text NOT NULL,
    schema_version integer NOT NULL DEFAULT 1,
    payload        jsonb NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    log_name       text NOT NULL DEFAULT 'chronicle',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    hash           bytea NOT NULL,
    CONSTRAINT events_schema_version_check CHECK (schema_version >= 1),
    CONSTRAINT events_version_check CHECK (version >= 1)
) PARTITION BY RANGE ("position");
ALTER SEQUENCE events_position_seq OWNED BY events."position";

-- The log's indexes, on every segment; each serves the query 0020 names for it.
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY ("position") WITH (fillfactor = 100);
CREATE INDEX events_type_idx ON events (type, "position");
CREATE INDEX events_actor_idx ON events ((metadata->>'actor_id'), "position");
CREATE INDEX events_session_idx ON events ((metadata->>'session_id'), "position")
    WHERE (metadata->>'session_id') IS NOT NULL;
CREATE INDEX events_causation_idx ON events USING hash ((metadata->>'causation_id'))
    WHERE (metadata->>'causation_id') IS NOT NULL;
CREATE INDEX events_command_idx ON events USING hash ((metadata->>'command_id'))
    WHERE (metadata->>'command_id') IS NOT NULL;
CREATE INDEX events_correlation_idx ON events USING hash ((metadata->>'correlation_id'))
    WHERE (metadata->>'correlation_id') IS NOT NULL;

-- Immutability: the row triggers are cloned onto every segment, now and when one is attached;
-- TRUNCATE triggers are per table (prepare_log_segment adds each segment's).
CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_claim_event_id BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION claim_event_id();

DO $$
BEGIN
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_segment_0 FOR VALUES FROM (MINVALUE) TO (%s)',
                   (SELECT end_position FROM log_segment WHERE segment_number = 0));
    ALTER TABLE events_segment_0 DROP CONSTRAINT events_segment_0_range;
    ALTER TABLE events_segment_0 ALTER COLUMN "position" DROP DEFAULT;
END;
$$;

-- Functions that return the log's rows (partition_events of 0012, read_log) named the old
-- table's row type: each is made again, the same, on the new `events`.
DO $$
DECLARE
    f          regprocedure;
    definition text;
BEGIN
    FOR f IN SELECT oid FROM pg_proc WHERE prorettype = 'events_segment_0'::regtype LOOP
        definition := pg_get_functiondef(f);
        EXECUTE format('DROP FUNCTION %s', f);
        EXECUTE regexp_replace(definition, 'SETOF (public\.)?events_segment_0', 'SETOF public.events');
    END LOOP;
END;
$$;

-- Make the segments the plan asks for past the next position; returns how many it made. Run by
-- the application's login (the workers' tick) as well as the migrator: SECURITY DEFINER, owned
-- by the schema owner, with a fixed search_path. It only ever adds empty segments at the end.
CREATE FUNCTION ensure_log_segments() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    plan          log_segment_plan;
    last          log_segment;
    next_position bigint;
    made          integer := 0;
    segment       text;
    segment_end   bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1128813134, 22);  -- "CHRN", 22: one maker at a time
    SELECT * INTO plan FROM log_segment_plan;
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_position
    FROM events_position_seq;
    LOOP
        SELECT * INTO last FROM log_segment ORDER BY segment_number DESC LIMIT 1;
        EXIT WHEN last.end_position > next_position + plan.segments_ahead * plan.segment_size;
        -- A segment holds segment_size positions; after a jump of the sequence past every
        -- segment (setval), the next one also spans the gap, rather than one per size.
        segment_end := greatest(last.end_position, next_position) + plan.segment_size;
        segment := 'events_segment_' || (last.segment_number + 1);
        EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', segment);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN "position" DROP DEFAULT', segment);
        PERFORM prepare_log_segment(segment);
        -- ATTACH takes SHARE UPDATE EXCLUSIVE on events: appends go on meanwhile.
        EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       segment, last.end_position, segment_end);
        PERFORM name_log_segment_indexes(segment);
        INSERT INTO log_segment (segment_number, table_name, first_position, end_position)
        VALUES (last.segment_number + 1, segment, last.end_position, segment_end);
        made := made + 1;
    END LOOP;
    RETURN made;
END;
$$;
REVOKE ALL ON FUNCTION ensure_log_segments() FROM PUBLIC;

-- Rights: the log reads and appends as before; the bookkeeping is read-only to the application.
REVOKE ALL ON events, log_event_ids, log_segment, log_segment_plan FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        REVOKE ALL ON events, log_event_ids, log_segment, log_segment_plan FROM chronicle_app;
        GRANT SELECT ON events, log_event_ids, log_segment, log_segment_plan TO chronicle_app;
        GRANT EXECUTE ON FUNCTION ensure_log_segments(), partition_events(bigint, bigint, text[], bigint[]),
                                  read_log(bigint, integer, text[], text) TO chronicle_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_writer') THEN
        GRANT SELECT, INSERT ON events, log_event_ids TO chronicle_writer;
        REVOKE ALL ON events_segment_0 FROM chronicle_writer;
    END IF;
END;
$$;

SELECT ensure_log_segments();
