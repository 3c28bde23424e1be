-- 0005: the API's own tables: API keys (stored hashed) and Idempotency-Key responses.

-- An API key is `chr_<key_id>_<secret>`; only sha256(secret) is stored. The key's actor
-- identity goes into the metadata of every event appended through it.
CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    secret_hash text        NOT NULL,
    name        text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('writer', 'reader', 'auditor', 'operator', 'admin')),
    actor_id    text        NOT NULL,
    actor_type  text        NOT NULL CHECK (actor_type IN ('user', 'agent', 'service', 'system')),
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_created_idx ON api_keys (created_at, key_id);

-- A command sent with an Idempotency-Key: its first response, replayed to every retry.
-- Scoped by API key, so two clients never see each other's responses.
CREATE TABLE idempotency_keys (
    key_id          text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    method          text        NOT NULL,
    path            text        NOT NULL,
    -- NULL while the first request is still running.
    status          integer,
    headers         jsonb,
    body            bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
