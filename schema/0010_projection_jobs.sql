-- 0010: rebuilds and replays are jobs that workers run. The API and the CLI insert a
-- 'requested' row and send a wake-up; a worker claims the row under the projection's job
-- advisory lock (the rebuild lock, or the replay lock) and runs it; each worker's tick also
-- looks for requested rows, so a lost wake-up (or a CLI with no broker to send to) only delays.
-- A 'running' row whose lock no session holds was left by a worker that died: 'crashed'.

CREATE TABLE projection_job (
    id           bigserial PRIMARY KEY,
    kind         text   NOT NULL CHECK (kind IN ('rebuild', 'replay')),
    projection   text   NOT NULL,
    options      jsonb  NOT NULL DEFAULT '{}',      -- rebuild: partitions; replay: from_position
    state        text   NOT NULL DEFAULT 'requested'
                 CHECK (state IN ('requested', 'running', 'done', 'failed')),
    requested_by jsonb  NOT NULL DEFAULT '{}',      -- actor_id, actor_type, correlation_id, event_id
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at   timestamptz,
    finished_at  timestamptz,
    worker       text,                              -- host:pid of the worker that claimed it
    rebuild_id   bigint REFERENCES projection_rebuild (id),  -- a rebuild's progress row
    events_done  bigint,
    result       jsonb,                             -- replay: partitions moved
    error        text,
    reported_at  timestamptz                        -- when the completion's operator event was appended
);
-- At most one open (requested or running) job of each kind per projection: a second request is a 409.
CREATE UNIQUE INDEX projection_job_open ON projection_job (projection, kind)
    WHERE state IN ('requested', 'running');
CREATE INDEX projection_job_latest ON projection_job (projection, kind, id DESC);
-- Finished jobs whose operator event is still to be appended (normally none for long).
CREATE INDEX projection_job_unreported ON projection_job (id)
    WHERE state IN ('done', 'failed') AND reported_at IS NULL;
