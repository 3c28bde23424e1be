"""GET /v1/event-types: the stored schemas describe the stored payloads exactly."""

from __future__ import annotations

import httpx
from jsonschema import Draft202012Validator

from tests.api.conftest import assert_problem


def test_event_types_list_the_stored_payload_schemas(feed_server, feed_pool, feed_tokens, subscriber) -> None:
    from service_layer.keys import create_key

    listed = subscriber.get("/v1/event-types").json()["event_types"]
    by_type = {t["type"]: t for t in listed}
    created = by_type["document.created"]
    assert created["schema_version"] == 1 and created["current"] and created["stream_type"] == "document"
    schema = created["json_schema"]
    assert "originator_id" not in schema["properties"] and "originator_version" not in schema["required"]
    assert {"timestamp", "namespace", "title"} <= set(schema["required"]) and schema["additionalProperties"] is False
    writer = create_key(feed_pool, "contract-writer", "writer")[1]
    with httpx.Client(base_url=feed_server, headers={"Authorization": f"Bearer {writer}"}) as client:
        made = client.post("/v1/documents", json={"namespace": "contract", "type": "note", "title": "T",
                                                  "content": "c"}).json()
    with httpx.Client(base_url=feed_server, headers={"Authorization": f"Bearer {feed_tokens['auditor']}"}) as audit:
        event = audit.get("/v1/events", params={"stream": made["stream_id"]}).json()["events"][0]
    Draft202012Validator(schema).validate(event["payload"])
    assert not Draft202012Validator(schema).is_valid({**event["payload"], "surprise": 1})
    only = subscriber.get("/v1/event-types", params={"stream_type": "operator"}).json()["event_types"]
    assert only and {t["stream_type"] for t in only} == {"operator"}
    assert_problem(httpx.get(f"{feed_server}/v1/event-types"), 401, "unauthorized")
