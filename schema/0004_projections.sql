-- 0004: the read side. Snapshot tables kept by the projection workers, and the engine's
-- bookkeeping: checkpoints per (projection, partition), rebuild progress, dead letters.
-- Every row carries the id, stream version and position of the last event that shaped it.
-- Timestamps come from the events (recorded_at), so a rebuild gives exactly the same rows.
-- Current-state tables leave 30% of each page free (fillfactor 70): most events rewrite a row
-- without touching its indexed columns, and a free slot on the same page makes that a HOT
-- update, with no index entry to add.

-- The partition of a stream: md5-based, so Python (hashlib) computes the same number.
CREATE FUNCTION projection_partition(p_stream_id text, p_partitions integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (('x' || substr(md5(p_stream_id), 1, 8))::bit(32)::bigint % p_partitions)::integer;
$$;

-- Chains ------------------------------------------------------------------------------------
CREATE TABLE chain_snapshot (
    chain_id      text PRIMARY KEY,
    name          text,
    description   text,
    metadata      jsonb,
    canvas_state  jsonb,
    viewport      jsonb,
    nodes         jsonb,          -- {node_id: {kind, ref_id, position}}
    created_at    timestamptz,
    updated_at    timestamptz,
    last_event_id uuid   NOT NULL,
    last_version  bigint NOT NULL,
    last_position bigint NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX chain_snapshot_name_idx ON chain_snapshot (name);
CREATE INDEX chain_snapshot_metadata_idx ON chain_snapshot USING gin (metadata jsonb_path_ops);

-- Live edges of each chain; a deleted edge (or chain) leaves this table.
CREATE TABLE edge (
    chain_id      text NOT NULL,
    edge_id       text NOT NULL,
    source_id     text,
    target_id     text,
    type          text,
    metadata      jsonb,
    created_at    timestamptz,
    updated_at    timestamptz,
    last_event_id uuid   NOT NULL,
    last_version  bigint NOT NULL,
    last_position bigint NOT NULL,
    PRIMARY KEY (chain_id, edge_id)
) WITH (fillfactor = 70);
CREATE INDEX edge_source_idx ON edge (chain_id, source_id);
CREATE INDEX edge_target_idx ON edge (chain_id, target_id);

-- Documents ---------------------------------------------------------------------------------
CREATE TABLE document_snapshot (
    document_id      text PRIMARY KEY,
    namespace        text NOT NULL,
    document_type    text NOT NULL,
    title            text,
    content          text,
    body             jsonb,
    body_hash        text,
    metadata         jsonb,
    version          integer,      -- the content version
    session_id       text,         -- the creating event's session
    created_by       text,
    created_by_type  text,
    created_at       timestamptz,
    created_position bigint,       -- keyset cursor for "newest first"
    updated_at       timestamptz,
    last_event_id    uuid   NOT NULL,
    last_version     bigint NOT NULL,
    last_position    bigint NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX document_snapshot_ns_type_idx ON document_snapshot (namespace, document_type, created_position DESC);
CREATE INDEX document_snapshot_type_idx ON document_snapshot (document_type, created_position DESC);
CREATE INDEX document_snapshot_metadata_idx ON document_snapshot USING gin (metadata jsonb_path_ops);
-- getBySession: WHERE session_id = $1 AND created_position < $cursor ORDER BY created_position DESC
CREATE INDEX document_snapshot_session_idx ON document_snapshot (session_id, created_position DESC);

-- Bodies, stored once: keyed by the sha256 of {content, body}.
CREATE TABLE document_body (
    body_hash text PRIMARY KEY,
    content   text,
    body      jsonb
);

-- One header row per content version (created/updated events); history stays after delete.
CREATE TABLE document_version (
    document_id        text    NOT NULL,
    version            integer NOT NULL,
    namespace          text    NOT NULL,
    document_type      text    NOT NULL,
    title              text,
    metadata           jsonb,
    body_hash          text    NOT NULL,
    change_description text,
    session_id         text,
    created_by         text,
    created_by_type    text,
    created_at         timestamptz,
    last_event_id      uuid    NOT NULL,
    last_version       bigint  NOT NULL,
    last_position      bigint  NOT NULL,
    PRIMARY KEY (document_id, version)
);
CREATE INDEX document_version_ns_type_idx ON document_version (namespace, document_type, document_id);
CREATE INDEX document_version_session_idx ON document_version (session_id, last_position DESC);
CREATE INDEX document_version_created_at_idx ON document_version (created_at DESC);
CREATE INDEX document_version_metadata_idx ON document_version USING gin (metadata jsonb_path_ops);

-- A deleted document's last state (snapshot row and tags), so `document.restored` can bring it back.
CREATE TABLE document_tombstone (
    document_id   text PRIMARY KEY,
    state         jsonb  NOT NULL,
    last_event_id uuid   NOT NULL,
    last_version  bigint NOT NULL,
    last_position bigint NOT NULL
) WITH (fillfactor = 70);

-- (tag, document) -> version, for live documents.
CREATE TABLE active_tag (
    tag              text    NOT NULL,
    document_id      text    NOT NULL,
    document_version integer NOT NULL,
    updated_at       timestamptz,
    updated_by       text,
    updated_by_type  text,
    session_id       text,
    last_event_id    uuid    NOT NULL,
    last_version     bigint  NOT NULL,
    last_position    bigint  NOT NULL,
    PRIMARY KEY (tag, document_id)
) WITH (fillfactor = 70);
CREATE INDEX active_tag_document_idx ON active_tag (document_id, document_version);

-- Every tag move: tagged, moved, untagged, and moves made by undo/redo.
CREATE TABLE tag_event (
    event_id         uuid    NOT NULL,
    tag              text    NOT NULL,
    document_id      text    NOT NULL,
    document_version integer,          -- NULL when the tag was removed
    previous_version integer,
    operation        text    NOT NULL, -- tagged | moved | untagged | undone | redone
    created_at       timestamptz,
    created_by       text,
    created_by_type  text,
    session_id       text,
    last_version     bigint  NOT NULL,
    last_position    bigint  NOT NULL,
    PRIMARY KEY (event_id, tag)
);
CREATE INDEX tag_event_document_tag_idx ON tag_event (document_id, tag, last_position);
CREATE INDEX tag_event_tag_idx ON tag_event (tag, last_position DESC);
CREATE INDEX tag_event_created_at_idx ON tag_event (created_at DESC);

-- Agents ------------------------------------------------------------------------------------
CREATE TABLE agent_snapshot (
    agent_id      text PRIMARY KEY,
    name          text,
    prompt        text,
    model         text,
    tools         jsonb,
    metadata      jsonb,
    created_at    timestamptz,
    updated_at    timestamptz,
    last_event_id uuid   NOT NULL,
    last_version  bigint NOT NULL,
    last_position bigint NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX agent_snapshot_name_idx ON agent_snapshot (name);
CREATE INDEX agent_snapshot_metadata_idx ON agent_snapshot USING gin (metadata jsonb_path_ops);

-- The agent's executions; they stay after the agent is deleted.
CREATE TABLE agent_execution (
    agent_id      text NOT NULL,
    execution_id  text NOT NULL,
    input         jsonb,
    output        jsonb,
    duration_ms   double precision,
    tokens        jsonb,
    metadata      jsonb,
    session_id    text,
    created_at    timestamptz,
    last_event_id uuid   NOT NULL,
    last_version  bigint NOT NULL,
    last_position bigint NOT NULL,
    PRIMARY KEY (agent_id, execution_id)
);
CREATE INDEX agent_execution_agent_idx ON agent_execution (agent_id, last_position DESC);

-- Engine bookkeeping --------------------------------------------------------------------------
-- One row per projection: its partition count (changed only by a rebuild).
CREATE TABLE projection (
    name       text PRIMARY KEY,
    partitions integer NOT NULL CHECK (partitions BETWEEN 1 AND 1024),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The log position each partition has applied up to; committed with its rows.
CREATE TABLE projection_checkpoint (
    projection text    NOT NULL,
    partition  integer NOT NULL,
    position   bigint  NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection, partition)
);

-- Rebuilds into shadow tables, with progress readable while they run.
CREATE TABLE projection_rebuild (
    id          bigserial PRIMARY KEY,
    projection  text   NOT NULL,
    state       text   NOT NULL DEFAULT 'running',   -- running | done | failed
    partitions  integer NOT NULL,
    head        bigint NOT NULL,                      -- safe position when it started
    total       bigint NOT NULL,                      -- events to project up to head
    done        bigint NOT NULL DEFAULT 0,
    position    bigint NOT NULL DEFAULT 0,            -- the shadow's checkpoint
    rate        double precision,                     -- events/s so far
    eta_seconds double precision,
    error       text,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE INDEX projection_rebuild_projection_idx ON projection_rebuild (projection, id DESC);

-- Parked events: the failing one, and every later event of its stream behind it.
CREATE TABLE dead_letter (
    id            bigserial PRIMARY KEY,
    projection    text    NOT NULL,
    partition     integer NOT NULL,
    shadow        boolean NOT NULL DEFAULT false,     -- parked by a running rebuild
    position      bigint  NOT NULL,
    event_id      uuid    NOT NULL,
    stream_id     text    NOT NULL,
    type          text    NOT NULL,
    error         text    NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    first_failure timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_failure  timestamptz NOT NULL DEFAULT clock_timestamp(),
    status        text    NOT NULL DEFAULT 'parked',  -- parked | retried | skipped
    resolved_at   timestamptz
);
CREATE UNIQUE INDEX dead_letter_parked_key ON dead_letter (projection, shadow, position) WHERE status = 'parked';
CREATE INDEX dead_letter_stream_idx ON dead_letter (projection, stream_id, position);
