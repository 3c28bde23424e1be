-- 0018: services follow the log. A `subscriber` key role; the open subscriptions of every API
-- process (GET /v1/subscriptions); consumer groups with members, leases and a checkpoint per
-- (group, partition). A group's parked events are dead letters whose projection is
-- 'group:<name>', so operators list, retry and skip them as they do a projection's.

ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('writer', 'reader', 'auditor', 'operator', 'admin', 'subscriber'));

-- One row per open GET /v1/subscribe response, written by the API process that serves it:
-- inserted when it opens, its position and seen_at moved at each heartbeat, deleted when it
-- closes. A row whose process died stops being seen; GET /v1/subscriptions shows it as stale.
CREATE TABLE subscription (
    id            uuid        PRIMARY KEY,
    key_id        text        NOT NULL,
    format        text        NOT NULL CHECK (format IN ('sse', 'ndjson')),
    filters       jsonb       NOT NULL,
    started_after bigint      NOT NULL,
    position      bigint      NOT NULL,  -- the feed has sent (or passed over) everything up to here
    events_sent   bigint      NOT NULL DEFAULT 0,
    opened_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    seen_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    server_pid    integer     NOT NULL
);

-- A consumer group: its partition count is fixed when its first member joins.
CREATE TABLE consumer_group (
    name       text        PRIMARY KEY,
    partitions integer     NOT NULL CHECK (partitions BETWEEN 1 AND 1024),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A group's members. A member whose lease has expired owns nothing; it must join again.
CREATE TABLE consumer_group_member (
    member_id        uuid        PRIMARY KEY,
    group_name       text        NOT NULL REFERENCES consumer_group (name),
    name             text,
    key_id           text        NOT NULL,
    lease_seconds    integer     NOT NULL CHECK (lease_seconds BETWEEN 1 AND 3600),
    joined_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    seen_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_expires_at timestamptz NOT NULL
);
-- Partition assignment: a group's members in join order (WHERE group_name = $1 ORDER BY joined_at).
CREATE INDEX consumer_group_member_group_idx ON consumer_group_member (group_name, joined_at, member_id);

-- Where each (group, partition) stands: `position` is acknowledged (done), `delivered` is how
-- far the last fetch read, and `delivered_to` the member it answered. An ack moves `position` up
-- to at most `delivered`, and only the ack of the member it was delivered to: a member that owned
-- the partition before never acks events another member received.
CREATE TABLE consumer_group_checkpoint (
    group_name text        NOT NULL REFERENCES consumer_group (name),
    partition  integer     NOT NULL CHECK (partition >= 0),
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    delivered  bigint      NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    delivered_to uuid,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (group_name, partition)
);

-- The stored schemas so far described the pydantic models, not the stored payloads (they required
-- the originator id and version, kept in columns, and allowed any other field). They are written
-- again, exactly, at the next start; from then on a row is never overwritten (a changed payload
-- shape is a new schema version with an upcaster).
DELETE FROM event_definitions;

-- A group fetch leaves out the events it parked before: WHERE projection = $1 AND position = ANY($2).
CREATE INDEX dead_letter_position_idx ON dead_letter (projection, position);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE
            ON subscription, consumer_group, consumer_group_member, consumer_group_checkpoint TO chronicle_app;
    END IF;
END
$$;
