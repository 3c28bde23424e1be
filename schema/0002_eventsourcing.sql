-- 0002: what the eventsourcing library needs beyond the event store.
-- Tracking positions of processed notifications, aggregate snapshots, and an index that
-- finds the events a command appended (idempotent command ids).

-- tracking: how far a projection or process application (`tracker`) has processed the
-- notification log of an upstream application. One row each; it only moves forward.
CREATE TABLE tracking (
    tracker          text        NOT NULL,
    application_name text        NOT NULL,
    notification_id  bigint      NOT NULL CHECK (notification_id >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tracker, application_name)
);

-- snapshots: an aggregate's state at a version, so a load replays only the events after it.
-- Snapshots are a cache, not history: they may be deleted and taken again.
-- log_name keeps two applications' snapshots apart, as for events.
CREATE TABLE snapshots (
    log_name    text        NOT NULL,
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL,
    type        text        NOT NULL,
    state       jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (log_name, stream_id, version)
);

-- Idempotent commands: which events did command X append?
CREATE INDEX events_command_idx ON events ((metadata->>'command_id'));
