-- 0009: the append locks get a key space of their own, and only appenders count as blockers.
-- Before, safe_position() counted every single-bigint advisory lock in the database, and an
-- append waited for the lock keyed at the next position: a foreign `pg_advisory_lock(1)` froze
-- every reader, and a foreign exclusive lock on the next position stopped every writer.
-- Now (see docs/design/reader-locks.md):
--   * an append's key is log_lock_key(position) = (0x4348 << 48) | position ("CH" tagged);
--   * it is taken with pg_try_advisory_xact_lock_shared, so an append never waits on it; where
--     someone else holds that key exclusively, hold_log_position() skips to the next position;
--   * a tagged key holds readers back only if its session also holds RowExclusiveLock on
--     `events`: a statement inserting into `events` locks the table before it runs (and keeps
--     the lock to transaction end), so every in-flight append has it; a session that cannot
--     insert into `events` cannot have it.

-- The advisory key an append holds while it may still take positions from `position` on.
-- Inlined by the planner (a plain SQL expression), so it costs nothing on the append.
CREATE FUNCTION log_lock_key(p_position bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (17224::bigint << 48) | p_position  -- 17224 = 0x4348, "CH"
$$;


-- hold_log_position: the append's slow path, only called when its try lock failed because
-- another session holds the tagged key exclusively (or waits for it). It takes a position
-- as a hole (readers skip holes), so the next key is past every position taken, and tries
-- again; it never waits. Every key it holds is <= the positions the append then draws.
CREATE FUNCTION hold_log_position() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    next_position bigint;
BEGIN
    LOOP
        PERFORM nextval('events_position_seq');  -- the hole: the key in the way is now behind us
        SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_position
        FROM events_position_seq;
        IF pg_try_advisory_xact_lock_shared(log_lock_key(next_position)) THEN
            RETURN true;
        END IF;
    END LOOP;
END;
$$;


-- log_append_locks: the append locks held now, one row per (session, key), from ONE read of
-- pg_locks (each read of the view is a pg_lock_status() call, which visits every backend).
-- A tagged key counts only if the same session holds RowExclusiveLock on `events` (see above).
-- Both sides are read in one pg_lock_status() call; it reads backends' fast-path slots before
-- the main lock table, so an append's relation lock (taken before its advisory lock, and held
-- longer) is never missed while its advisory lock is seen.
CREATE FUNCTION log_append_locks() RETURNS TABLE (pid integer, held_position bigint)
LANGUAGE sql STABLE AS $$
    WITH l AS MATERIALIZED (
        SELECT l.locktype, l.relation, l.classid, l.objid, l.objsubid, l.pid, l.mode
        FROM pg_locks l
        WHERE l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    )
    SELECT a.pid, ((a.classid::bigint & 65535) << 32) | a.objid::bigint
    FROM l a
    WHERE a.locktype = 'advisory' AND a.objsubid = 1 AND (a.classid::bigint >> 16) = 17224
      AND EXISTS (SELECT 1 FROM l r
                  WHERE r.pid = a.pid AND r.locktype = 'relation'
                    AND r.relation = 'events'::regclass AND r.mode = 'RowExclusiveLock');
$$;


-- safe_position: the highest position below which no event can still appear.
-- Reads the sequence first, then the held append locks: any append that took a position
-- at or below last_value took its lock before that, so either it still holds the lock or
-- it has finished and is visible to the next statement's snapshot.
-- STABLE so that `position <= safe_position()` in a query is an index condition computed
-- once per scan.
CREATE OR REPLACE FUNCTION safe_position() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    taken   bigint;
    blocked bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO taken
    FROM events_position_seq;
    SELECT min(held_position) INTO blocked FROM log_append_locks();
    RETURN least(taken, blocked - 1);
END;
$$;


-- log_blockers: the open appends holding the log back, oldest position first.
CREATE OR REPLACE FUNCTION log_blockers() RETURNS TABLE (
    pid integer, held_position bigint, xact_start timestamptz, state text,
    application_name text, query text
) LANGUAGE sql AS $$
    SELECT k.pid, min(k.held_position), a.xact_start, a.state, a.application_name, a.query
    FROM log_append_locks() k JOIN pg_stat_activity a ON a.pid = k.pid
    GROUP BY k.pid, a.xact_start, a.state, a.application_name, a.query
    ORDER BY 2;
$$;


-- log_head: the last committed position (0 for an empty log): what projection lag is measured
-- against, so a log held back below its head shows as lag that grows.
CREATE FUNCTION log_head() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(max(position), 0) FROM events
$$;


-- log_status: the log's head (the last committed position), the safe position readers read up
-- to, how many appends hold it back, and since when (and how many seconds) readers have been
-- held below the head: the xact_start of the oldest open append below the head; NULL (and 0)
-- when nothing is hidden.
-- The one place lag, readiness, metrics and `chronicle status` measure the log from.
CREATE FUNCTION log_status() RETURNS TABLE (
    head bigint, safe bigint, blockers integer, held_back_since timestamptz, held_back_seconds float8
) LANGUAGE plpgsql AS $$
DECLARE
    taken  bigint;
    hiding integer[];  -- the sessions whose appends hold the safe position below the head
BEGIN
    head := log_head();
    -- As in safe_position(): the sequence first, then the locks.
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO taken
    FROM events_position_seq;
    SELECT least(taken, min(k.held_position) - 1), count(DISTINCT k.pid),
           array_agg(DISTINCT k.pid) FILTER (WHERE k.held_position <= head)
    INTO safe, blockers, hiding
    FROM log_append_locks() k;
    IF hiding IS NOT NULL THEN
        -- pg_stat_get_activity(pid) reads one backend, not all of them. Another role's
        -- xact_start is hidden without pg_read_all_stats: then the first hidden event's time.
        SELECT min(a.xact_start) INTO held_back_since
        FROM unnest(hiding) p, pg_stat_get_activity(p) a;
        held_back_since := coalesce(held_back_since,
            (SELECT e.recorded_at FROM events e WHERE e.position > safe ORDER BY e.position LIMIT 1));
    END IF;
    -- By the database's clock, as the timestamps are.
    held_back_seconds := coalesce(greatest(extract(epoch FROM clock_timestamp() - held_back_since), 0), 0);
    RETURN NEXT;
END;
$$;
