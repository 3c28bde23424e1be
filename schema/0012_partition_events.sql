-- 0012: the one partition-aware read of the log, for projections and their status.
-- partition_events(after, upto, types, floors): events in (after, upto] of some stream types,
-- in position order. With `floors` (one position per partition, indexed by
-- projection_partition(stream_id, cardinality(floors)) + 1), an event is read only if it
-- lies above its partition's floor: partitions a caller does not hold get the floor `upto`,
-- and held partitions whose checkpoints differ each start at their own.
-- A single-SELECT SQL function: the planner inlines it into the caller's query, so a batch
-- read with LIMIT is still one range scan of events_pkey.
CREATE FUNCTION partition_events(
    p_after  bigint,
    p_upto   bigint,
    p_types  text[],
    p_floors bigint[] DEFAULT NULL
) RETURNS SETOF events LANGUAGE sql STABLE AS $$
    SELECT * FROM events e
    WHERE e.position > p_after AND e.position <= p_upto
      AND e.stream_type = ANY (p_types)
      AND (p_floors IS NULL
           OR e.position > p_floors[projection_partition(e.stream_id, cardinality(p_floors)) + 1])
    ORDER BY e.position
$$;

-- partition_floors(partitions, partition, floor, others): the floors that read one partition from
-- `floor` (every other partition gets `others`, at or above the read's end), for counting or
-- checking one partition's events with partition_events.
CREATE FUNCTION partition_floors(p_partitions integer, p_partition integer, p_floor bigint, p_others bigint)
RETURNS bigint[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(CASE WHEN g = p_partition THEN p_floor ELSE p_others END ORDER BY g)
    FROM generate_series(0, p_partitions - 1) g
$$;
