-- 0017: data subjects' keys, and which streams hold each subject's personal data.
--
-- Personal fields are stored encrypted with their subject's data key (infrastructure/
-- personal_data.py). Forgetting a subject destroys its key: the row stays, key material
-- NULL, so later writes for that subject are stored already erased.

CREATE TABLE data_keys (
    subject_id   text PRIMARY KEY,              -- the key of a subject, found at every encryption
    key_id       uuid NOT NULL UNIQUE,          -- named in every envelope; reads look keys up by it
    wrapped_key  bytea,                         -- nonce || AES-GCM(master key, data key); NULL: forgotten
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CHECK (length(subject_id) BETWEEN 1 AND 200),
    CHECK ((wrapped_key IS NULL) = (forgotten_at IS NOT NULL))
);

CREATE TABLE subject_streams (
    subject_id text NOT NULL,
    stream_id  text NOT NULL,
    seq        bigserial NOT NULL,
    PRIMARY KEY (subject_id, stream_id)          -- forgetting: the streams of a subject
);
-- An append without a named subject: the stream's first subject.
CREATE INDEX subject_streams_stream_idx ON subject_streams (stream_id, seq);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON data_keys, subject_streams TO chronicle_app;
        GRANT USAGE, SELECT ON SEQUENCE subject_streams_seq_seq TO chronicle_app;
    END IF;
END;
$$;
