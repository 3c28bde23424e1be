"""Three ways to follow GET /v1/subscribe, each yielding (position, event item) in arrival order.

`httpx-sse` is a real SSE client library; `plain` parses the SSE frames from raw lines, as a
service without an SSE library would; `ndjson` reads one JSON object a line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import connect_sse

Item = tuple[int, dict[str, Any]]


def sse_library(client: httpx.Client, params: dict[str, Any], headers: dict[str, str]) -> Iterator[Item]:
    with connect_sse(client, "GET", "/v1/subscribe", params=params, headers=headers) as source:
        source.response.raise_for_status()
        for event in source.iter_sse():
            item = json.loads(event.data)
            assert event.event == item["type"] and int(event.id) == item["position"], event
            yield item["position"], item


def plain(client: httpx.Client, params: dict[str, Any], headers: dict[str, str]) -> Iterator[Item]:
    with client.stream("GET", "/v1/subscribe", params=params,
                       headers={**headers, "Accept": "text/event-stream"}) as response:
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # a heartbeat
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if fields:
                item = json.loads(fields["data"])
                assert fields["event"] == item["type"] and int(fields["id"]) == item["position"], fields
                fields = {}
                yield item["position"], item


def ndjson(client: httpx.Client, params: dict[str, Any], headers: dict[str, str]) -> Iterator[Item]:
    with client.stream("GET", "/v1/subscribe", params=params,
                       headers={**headers, "Accept": "application/x-ndjson"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line:
                continue
            item = json.loads(line)
            if item.get("heartbeat"):
                assert isinstance(item["position"], int)
                continue
            yield item["position"], item


READERS = {"httpx-sse": sse_library, "plain": plain, "ndjson": ndjson}
