"""The event contract: every stored payload validates against its type's stored JSON Schema."""

from __future__ import annotations

from jsonschema import Draft202012Validator

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from service_layer.bootstrap import write_event_definitions

# Streams a test fills with payloads outside the contract on purpose (history from before a
# bound, written around the registry): left out of the check, by stream id.
OUT_OF_CONTRACT: set[str] = set()


def assert_payloads_fit_schemas(url: str) -> int:
    """Write the definitions, read them back, validate every stored event of a defined type; the count."""
    pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="contract")
    try:
        write_event_definitions(EventStore(pool))
        with pool.connection() as conn:
            validators = {(r["type"], r["schema_version"]): Draft202012Validator(
                r["json_schema"], format_checker=Draft202012Validator.FORMAT_CHECKER)
                for r in conn.execute("SELECT type, schema_version, json_schema FROM event_definitions")}
            checked, failures = 0, []
            with conn.transaction(), conn.cursor(name="payloads") as cur:  # server-side: the log may be long
                cur.execute("SELECT position, stream_id, type, schema_version, payload FROM events")
                for row in cur:
                    if row["stream_id"] in OUT_OF_CONTRACT:
                        continue
                    validator = validators.get((row["type"], row["schema_version"]))
                    assert validator is not None or "." not in row["type"], f"no stored schema for {row['type']}"
                    if validator is None:
                        continue  # a library event stored under its topic, outside the registry
                    checked += 1
                    failures += [f"{row['type']} at {row['position']}: {e.message}"
                                 for e in validator.iter_errors(row["payload"])][:1]
    finally:
        pool.close()
    assert not failures, failures[:20]
    return checked
