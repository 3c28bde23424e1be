-- 0019: console sign-ins. An API key is exchanged for a session; the browser holds only the
-- session's random token in an HttpOnly cookie, and only sha256(token) is stored here. Each
-- request looks up the session, then the key itself (service_layer/keys.py), so a revoked key
-- ends its sessions at the next request. Deleting a key's row deletes its sessions.
CREATE TABLE console_session (
    token_hash  text        PRIMARY KEY,
    key_id      text        NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
-- Sign-in deletes expired sessions: WHERE expires_at < now().
CREATE INDEX console_session_expires_idx ON console_session (expires_at);
-- The foreign key's cascade from api_keys: WHERE key_id = $1.
CREATE INDEX console_session_key_idx ON console_session (key_id);

-- The overview's lag chart: each projection's lag, sampled at most every two seconds while an
-- overview is open, kept ten minutes. Shared by every API process, so every poll draws the same.
CREATE TABLE console_lag_sample (
    taken_at    timestamptz NOT NULL,
    projection  text        NOT NULL,
    lag_events  bigint      NOT NULL,
    PRIMARY KEY (taken_at, projection)
);
-- The primary key serves the chart's read (WHERE taken_at > now() - 10 min ORDER BY taken_at),
-- the newest-sample probe and the deletion of old samples.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON console_session, console_lag_sample TO chronicle_app;
    END IF;
END
$$;
