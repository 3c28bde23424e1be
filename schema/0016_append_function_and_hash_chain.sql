-- 0016: least privilege and tamper evidence.
--
-- 1. The application appends only through append_event / append_events, SECURITY DEFINER
--    functions owned by the role chronicle_writer (NOLOGIN). chronicle_app (0006) loses INSERT
--    on events, every write on streams, and UPDATE on sequences (setval). Not owning events
--    or streams, it cannot alter them, nor disable or drop their triggers; not a superuser,
--    it cannot SET session_replication_role.
-- 2. Each event stores `hash`: sha256 over its canonical bytes (event_hash below, spelled out
--    in docs/tamper-evidence.md) and the hash of the previous event of its stream. The append
--    computes it in the same call. streams.head_hash is the hash of the stream's last event.
-- 3. `seals`: signed Merkle tree heads over the log, append-only (written by the sealer,
--    signed outside the database; see infrastructure/seals.py).

-- An event's hash: sha256 of a fixed tag, the hash of the previous event of its stream (32 zero
-- bytes for version 1) and its content. Each text is its UTF-8 length (4 bytes, big-endian)
-- then its UTF-8 bytes; the payload and metadata are hashed as jsonb prints them; the time is
-- microseconds since 1970 UTC. plpgsql: a SQL function with helpers cost ten times as much.
CREATE FUNCTION event_hash(p_previous bytea, p_event_id uuid, p_stream_id text, p_stream_type text,
                           p_version bigint, p_type text, p_schema_version integer, p_payload jsonb,
                           p_metadata jsonb, p_recorded_at timestamptz) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    stream      bytea := convert_to(p_stream_id, 'UTF8');
    stream_type bytea := convert_to(p_stream_type, 'UTF8');
    type_name   bytea := convert_to(p_type, 'UTF8');
    payload     bytea := convert_to(p_payload::text, 'UTF8');
    metadata    bytea := convert_to(p_metadata::text, 'UTF8');
BEGIN
    RETURN sha256(
        convert_to('chronicle/event/1', 'UTF8')
        || coalesce(p_previous, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
        || uuid_send(p_event_id)
        || int4send(length(stream)) || stream || int4send(length(stream_type)) || stream_type
        || int8send(p_version) || int4send(length(type_name)) || type_name || int4send(p_schema_version)
        || int4send(length(payload)) || payload || int4send(length(metadata)) || metadata
        || int8send((extract(epoch FROM p_recorded_at) * 1000000)::bigint));
END;
$$;

ALTER TABLE events ADD COLUMN hash bytea;
ALTER TABLE streams ADD COLUMN head_hash bytea;

-- Events stored before this migration get their hashes now, stream by stream, in version order.
DO $$
DECLARE
    e        record;
    previous bytea;
    stream   text;
BEGIN
    ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete;
    FOR e IN SELECT * FROM events ORDER BY stream_id, version LOOP
        IF stream IS DISTINCT FROM e.stream_id THEN
            previous := NULL;
            stream := e.stream_id;
        END IF;
        previous := event_hash(previous, e.event_id, e.stream_id, e.stream_type, e.version, e.type,
                               e.schema_version, e.payload, e.metadata, e.recorded_at);
        UPDATE events SET hash = previous WHERE position = e.position;
    END LOOP;
    ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete;
    UPDATE streams s SET head_hash = h.hash FROM events h WHERE h.stream_id = s.stream_id AND h.version = s.version;
END;
$$;
ALTER TABLE events ALTER COLUMN hash SET NOT NULL;

-- Claim the stream's versions (as the statement of infrastructure/append_statement.py did):
-- returns the new version and the stream's head hash before this append, or no row when the
-- stream is not at the expected version or is of another type. p_kind: version, no_stream, any.
CREATE FUNCTION claim_versions(p_kind text, p_stream_id text, p_stream_type text, p_expected bigint, p_n bigint,
                               OUT new_version bigint, OUT previous bytea)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_kind = 'version' THEN
        UPDATE streams AS s SET version = s.version + p_n, updated_at = now()
        WHERE s.stream_id = p_stream_id AND s.version = p_expected AND s.stream_type = p_stream_type
        RETURNING s.version, s.head_hash INTO new_version, previous;
    ELSIF p_kind = 'no_stream' THEN
        INSERT INTO streams (stream_id, stream_type, version) VALUES (p_stream_id, p_stream_type, p_n)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING version, head_hash INTO new_version, previous;
    ELSE
        INSERT INTO streams AS s (stream_id, stream_type, version) VALUES (p_stream_id, p_stream_type, p_n)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + EXCLUDED.version, updated_at = now()
        WHERE s.stream_type = EXCLUDED.stream_type
        RETURNING s.version, s.head_hash INTO new_version, previous;
    END IF;
END;
$$;

-- Hold back readers: a shared advisory lock keyed at the next position, taken before any
-- position is (see 0009 and hold_log_position).
CREATE FUNCTION hold_next_position() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(log_lock_key(
            (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM events_position_seq))) THEN
        PERFORM hold_log_position();
    END IF;
END;
$$;

-- Append one event: claim its version and move the stream's head hash in one statement, hold
-- back readers, insert. Returns its (position, version), or no row (nothing written) when the
-- stream is not at the expected version or is of another type. One statement on `streams`
-- rather than claim_versions and a second UPDATE: a row version less per append.
CREATE FUNCTION append_event(p_kind text, p_stream_id text, p_stream_type text, p_expected bigint,
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
    IF new_version IS NULL THEN
        RETURN;
    END IF;
    PERFORM hold_next_position();
    RETURN QUERY
    INSERT INTO events AS e (event_id, stream_id, stream_type, version, type, schema_version,
                             payload, metadata, log_name, recorded_at, hash)
    VALUES (p_event_id, p_stream_id, p_stream_type, new_version, p_type, p_schema_version,
            p_payload, p_metadata, p_log_name, at, new_hash)
    RETURNING e.position, e.version;
END;
$$;

-- Append several events to one stream, versions following on in the order given.
CREATE FUNCTION append_events(p_kind text, p_stream_id text, p_stream_type text, p_expected bigint,
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
    INSERT INTO events AS e (event_id, stream_id, stream_type, version, type, schema_version,
                             payload, metadata, log_name, recorded_at, hash)
    SELECT x.event_id, p_stream_id, p_stream_type, claimed.new_version - n + x.ord, x.type,
           x.schema_version, x.payload, p_metadata, p_log_name, x.at, x.hash
    FROM unnest(p_event_ids, p_types, p_schema_versions, p_payloads, times, hashes)
         WITH ORDINALITY AS x(event_id, type, schema_version, payload, at, hash, ord)
    ORDER BY x.ord
    RETURNING e.position, e.version;
    UPDATE streams SET head_hash = head WHERE stream_id = p_stream_id;
END;
$$;

-- Seals: signed Merkle tree heads (RFC 6962 style) over the event hashes in (from, to].
CREATE TABLE seals (
    seal_number   bigint PRIMARY KEY CHECK (seal_number >= 1),
    from_position bigint NOT NULL,         -- exclusive: the previous seal's to_position
    to_position   bigint NOT NULL UNIQUE,  -- inclusive; serves "the seal that holds position P"
    event_count   bigint NOT NULL CHECK (event_count >= 1),
    merkle_root   bytea NOT NULL,
    previous_hash bytea NOT NULL,          -- the previous seal's seal_hash (zeros for the first)
    seal_hash     bytea NOT NULL,          -- sha256 of the signed message
    key_id        text NOT NULL,
    public_key    bytea NOT NULL,          -- Ed25519, raw 32 bytes; the private key never is here
    signature     bytea NOT NULL,
    sealed_at     timestamptz NOT NULL,
    CHECK (to_position > from_position)
);

CREATE FUNCTION seals_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'seals are immutable: % is not allowed on seals', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER seals_no_update_or_delete BEFORE UPDATE OR DELETE ON seals
    FOR EACH ROW EXECUTE FUNCTION seals_are_immutable();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON seals
    FOR EACH STATEMENT EXECUTE FUNCTION seals_are_immutable();

-- Roles and rights.
REVOKE ALL ON FUNCTION append_event(text, text, text, bigint, jsonb, text, uuid, text, integer, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION append_events(text, text, text, bigint, jsonb, text, uuid[], text[], integer[], jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION claim_versions(text, text, text, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION hold_next_position() FROM PUBLIC;
REVOKE ALL ON FUNCTION hold_log_position() FROM PUBLIC;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON events, streams, seals FROM PUBLIC;
REVOKE UPDATE ON SEQUENCE events_position_seq FROM PUBLIC;

DO $$
DECLARE
    me record;
    f  text;
BEGIN
    SELECT rolsuper, rolcreaterole INTO me FROM pg_roles WHERE rolname = current_user;
    -- The appending functions' owner: no login, only the rights an append needs.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_writer') AND (me.rolsuper OR me.rolcreaterole) THEN
        BEGIN
            CREATE ROLE chronicle_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another database of this cluster created it at the same moment
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_writer') THEN
        IF NOT me.rolsuper AND NOT pg_has_role(current_user, 'chronicle_writer', 'MEMBER') THEN
            GRANT chronicle_writer TO CURRENT_USER;  -- to hand it the functions below
        END IF;
        GRANT SELECT, INSERT ON events TO chronicle_writer;
        GRANT SELECT, INSERT, UPDATE ON streams TO chronicle_writer;
        GRANT USAGE, SELECT ON SEQUENCE events_position_seq TO chronicle_writer;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO chronicle_writer', current_database());
        GRANT USAGE ON SCHEMA public TO chronicle_writer;
        FOREACH f IN ARRAY ARRAY[
            'append_event(text, text, text, bigint, jsonb, text, uuid, text, integer, jsonb)',
            'append_events(text, text, text, bigint, jsonb, text, uuid[], text[], integer[], jsonb[])'] LOOP
            EXECUTE format('ALTER FUNCTION %s OWNER TO chronicle_writer', f);
        END LOOP;
        GRANT EXECUTE ON FUNCTION claim_versions(text, text, text, bigint, bigint), hold_next_position(),
                                  hold_log_position() TO chronicle_writer;
    ELSE
        RAISE NOTICE 'role chronicle_writer does not exist and % may not create it: the append functions '
                     'stay owned by % (README, "Managed PostgreSQL")', current_user, current_user;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        -- The log and the streams: read, append through the functions, nothing else.
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON events, streams FROM chronicle_app;
        GRANT SELECT ON events, streams TO chronicle_app;
        GRANT EXECUTE ON FUNCTION
            append_event(text, text, text, bigint, jsonb, text, uuid, text, integer, jsonb),
            append_events(text, text, text, bigint, jsonb, text, uuid[], text[], integer[], jsonb[])
            TO chronicle_app;
        -- Seals: read and add, never change.
        REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON seals FROM chronicle_app;
        GRANT SELECT, INSERT ON seals TO chronicle_app;
        -- No sequence may be set (setval needs UPDATE); nextval needs only USAGE.
        REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM chronicle_app;
        REVOKE ALL ON SEQUENCE events_position_seq FROM chronicle_app;
        GRANT SELECT ON SEQUENCE events_position_seq TO chronicle_app;  -- safe_position() reads it
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE UPDATE ON SEQUENCES FROM chronicle_app;
        -- A rebuild swaps the documents projection's session_touch (0014) too: like the other
        -- read tables (0006) it must be chronicle_app's to be renamed and dropped.
        IF me.rolsuper OR pg_has_role(current_user, 'chronicle_app', 'MEMBER') THEN
            ALTER TABLE session_touch OWNER TO chronicle_app;
        END IF;
    END IF;
END;
$$;
