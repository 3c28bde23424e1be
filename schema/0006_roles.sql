-- 0006: the application's database role. History cannot be rewritten, even with SQL.
--
-- Deployments run two kinds of sessions:
--   * the migrator (`chronicle migrate`): owns the schema, runs these files;
--   * the application (`chronicle serve|worker|up`): a LOGIN role that is a member of the
--     group role `chronicle_app` created here, e.g.
--         CREATE ROLE chronicle_api LOGIN PASSWORD '...' IN ROLE chronicle_app;
--     and DATABASE_URL names that login role, never the owner.
--
-- The application may read the log and append to it (append_to_stream inserts), and may do
-- everything it needs on its own tables. It may not UPDATE, DELETE or TRUNCATE events, and,
-- not owning the table, it may not disable the immutability triggers or drop the table.
-- (The owner is still refused UPDATE/DELETE/TRUNCATE by those triggers, see 0001.)

-- Nobody gets to rewrite events through PUBLIC.
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;

DO $$
DECLARE
    me record;
    t  text;
BEGIN
    SELECT rolsuper, rolcreaterole INTO me FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app') THEN
        IF NOT (me.rolsuper OR me.rolcreaterole) THEN
            RAISE NOTICE 'role chronicle_app does not exist and % may not create it: '
                         'create it (NOLOGIN) and run the grants of 0006_roles.sql by hand', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE chronicle_app NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another database of this cluster created it at the same moment
        END;
    END IF;

    EXECUTE format('GRANT CONNECT ON DATABASE %I TO chronicle_app', current_database());
    GRANT USAGE, CREATE ON SCHEMA public TO chronicle_app;  -- CREATE: rebuilds' shadow tables
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO chronicle_app;
    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO chronicle_app;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO chronicle_app;

    -- The log: read and append only.
    REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON events FROM chronicle_app;
    GRANT SELECT, INSERT ON events TO chronicle_app;
    -- Schema bookkeeping stays the migrator's.
    REVOKE INSERT, UPDATE, DELETE ON schema_migrations, event_definitions FROM chronicle_app;
    GRANT INSERT, UPDATE ON event_definitions TO chronicle_app;  -- the API registers definitions at start

    -- A rebuild swaps shadow tables for the live ones (DROP, RENAME): that needs ownership of
    -- the projections' tables, so chronicle_app owns them. Not events, streams or keys.
    IF me.rolsuper OR pg_has_role(current_user, 'chronicle_app', 'MEMBER') THEN
        FOREACH t IN ARRAY ARRAY['chain_snapshot', 'edge', 'document_snapshot', 'document_body',
                                 'document_version', 'document_tombstone', 'active_tag', 'tag_event',
                                 'agent_snapshot', 'agent_execution'] LOOP
            IF to_regclass(t) IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %I OWNER TO chronicle_app', t);
            END IF;
        END LOOP;
    ELSE
        RAISE NOTICE 'projection tables stay owned by %: rebuilds need the owner''s rights', current_user;
    END IF;

    -- Tables and sequences later migrations create get the same rights (a new table that must
    -- be append-only revokes them in its own migration, as events does above).
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO chronicle_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO chronicle_app;
END;
$$;
