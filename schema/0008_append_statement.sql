-- 0008: appends are one SQL statement sent by the store, no longer a plpgsql function.
-- The statement (infrastructure/append_statement.py) does what append_to_stream did: claim
-- the versions, take the shared advisory lock keyed at the next position, insert. Measured
-- with pgbench, 8 writers, one event per append: the function reached about 7k appends/s,
-- the same steps as one prepared statement about 9k, a plain INSERT about 12k. The rare
-- outcomes (conflict, retry, stream of another type) are told apart by the store after the
-- statement returns no row, rather than inside the function.

DROP FUNCTION append_to_stream(text, text, bigint, uuid[], text[], integer[], jsonb[], jsonb, text, boolean, boolean);
