"""Hostile input: oversized bodies, deep JSON, unicode edge cases, header injection and
SQL-injection strings in every filter of every list and read route.

Each gets a clear 4xx as problem+json (or, for a filter, a correct empty answer), never a
5xx, and nothing is written: the events table has as many rows after as before.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.api.conftest import assert_problem
from tests.conftest import migrated_database
from tests.reliability.conftest import clients_for, count_events, create_keys, start_api, wait_projected

INJECTIONS = [
    "' OR '1'='1", "'; DROP TABLE events; --", "\" OR \"\"=\"", "1; SELECT pg_sleep(5)--",
    "') OR 1=1 --", "%' --", "\\", "$$ || pg_sleep(5) || $$", "x' UNION SELECT * FROM api_keys --",
    "1 OR 1=1", "*/ SELECT 1 /*", "\x00", "a\x00b", "\u202e\u202dRTL", "😀" * 50, "é" * 300,
]


@pytest.fixture(scope="module")
def env(admin_url: str, template_dbname: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with migrated_database(admin_url, template_dbname) as url:
        server = None
        clients: dict[str, httpx.Client] = {}
        try:
            tokens = create_keys(url)
            base, server = start_api(url, tmp_path_factory.mktemp("hostile"))
            clients = clients_for(base, tokens)
            writer = clients["writer"]
            doc = writer.post("/v1/documents", json={"namespace": "hostile", "type": "t", "title": "seed",
                                                     "content": "x"}).json()
            agent = writer.post("/v1/agents", json={"name": "a", "prompt": "p", "model": "m"}).json()
            chain = writer.post("/v1/chains", json={"name": "c"}).json()
            wait_projected(clients["operator"])
            yield {"url": url, "base": base, "clients": clients, "doc": doc["stream_id"],
                   "agent": agent["stream_id"], "chain": chain["stream_id"], "server": server}
        finally:
            for client in clients.values():
                client.close()
            if server is not None:
                server.stop()


def refused(response: httpx.Response, *statuses: int) -> dict:
    """A 4xx problem+json (one of `statuses` if given), with no stack trace."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    return assert_problem(response, response.status_code)


@pytest.fixture
def unchanged(env) -> Iterator[None]:
    """The test writes nothing to the log."""
    before = count_events(env["url"])
    yield
    assert count_events(env["url"]) == before, "hostile input wrote events"


def test_oversized_bodies_are_refused(env, unchanged) -> None:
    writer = env["clients"]["writer"]
    big = {"namespace": "hostile", "type": "t", "title": "big", "content": "x" * 400_000}
    body = refused(writer.post("/v1/documents", json=big), 413)
    assert body["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # streamed, no Content-Length: counted as it arrives
        yield b'{"namespace": "hostile", "type": "t", "title": "big", "content": "'
        for _ in range(100):
            yield b"y" * 10_000
        yield b'"}'

    refused(writer.post("/v1/documents", content=chunks(), headers={"content-type": "application/json"}), 413)
    # A Content-Length that is not a number never reaches a route (httpx will not send one).
    token = writer.headers["authorization"].encode()
    status, _ = raw_request(env["base"], b"POST /v1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                            + token + b"\r\nContent-Type: application/json\r\nContent-Length: abc\r\n"
                            b"Connection: close\r\n\r\n{}")
    assert status == 400


@pytest.mark.parametrize("shape", ["object", "array", "mixed"])
def test_deeply_nested_json_is_refused(env, unchanged, shape: str) -> None:
    writer = env["clients"]["writer"]
    depth = 50_000
    inner = {"object": ('{"a":' * depth) + "1" + ("}" * depth),
             "array": ("[" * depth) + "1" + ("]" * depth),
             "mixed": ('[{"a":' * (depth // 2)) + "1" + ("}]" * (depth // 2))}[shape]
    raw = '{"namespace": "hostile", "type": "t", "title": "deep", "content": "x", "metadata": {"d": ' + inner + "}}"
    refused(writer.post("/v1/documents", content=raw.encode(), headers={"content-type": "application/json"}))
    # Moderately deep (but bounded) JSON in a command is refused too, not stored to choke readers.
    moderate = '{"a":' * 200 + "1" + "}" * 200
    raw = '{"namespace": "hostile", "type": "t", "title": "deep", "content": "x", "metadata": {"d": ' + moderate + "}}"
    refused(writer.post("/v1/documents", content=raw.encode(), headers={"content-type": "application/json"}))


@pytest.mark.parametrize("text", [
    '"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"nul\\u0000inside"',
])
@pytest.mark.parametrize("where", ["title", "content", "metadata_value", "metadata_key", "namespace"])
def test_unrepresentable_unicode_is_refused(env, unchanged, text: str, where: str) -> None:
    writer = env["clients"]["writer"]
    fields = {"namespace": '"hostile"', "type": '"t"', "title": '"ok"', "content": '"x"', "metadata": "{}"}
    if where == "metadata_value":
        fields["metadata"] = '{"k": ' + text + "}"
    elif where == "metadata_key":
        fields["metadata"] = "{" + text + ": 1}"
    else:
        fields[where] = text
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    refused(writer.post("/v1/documents", content=raw.encode(), headers={"content-type": "application/json"}), 422)


def test_invalid_utf8_and_wrong_content_types_are_refused(env, unchanged) -> None:
    writer = env["clients"]["writer"]
    refused(writer.post("/v1/documents", content=b'{"namespace": "\xff\xfe", "type": "t", "title": "x"}',
                        headers={"content-type": "application/json"}))
    refused(writer.post("/v1/documents", content=b"namespace=x", headers={"content-type": "text/plain"}))
    refused(writer.post("/v1/documents", content=b"", headers={"content-type": "application/json"}))
    refused(writer.post("/v1/documents", content=b"[1, 2]", headers={"content-type": "application/json"}))


def test_legitimate_unicode_round_trips_exactly(env) -> None:
    """RTL, emoji, combining marks and long strings are data, stored and read back unchanged."""
    writer, reader = env["clients"]["writer"], env["clients"]["reader"]
    title = "\u202eRTL override \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 😀👩‍👩‍👧 e\u0301 \ufeff"
    content = "z" * 100_000 + "😀"
    created = writer.post("/v1/documents", json={"namespace": "hostile", "type": "t", "title": title,
                                                 "content": content, "metadata": {"ключ": "值 😀"}})
    assert created.status_code == 201, created.text
    got = reader.get(f"/v1/documents/{created.json()['stream_id']}",
                     params={"min_position": created.json()["position"]}).json()
    assert got["title"] == title and got["content"] == content and got["metadata"] == {"ключ": "值 😀"}
    refused(writer.post("/v1/documents", json={"namespace": "hostile", "type": "t", "title": "t" * 2001,
                                               "content": "x"}), 422)


def raw_request(base: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes as they are (httpx refuses CR/LF in headers) and read the status line."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


@pytest.mark.parametrize("header", ["Idempotency-Key", "If-Match", "X-Session-Id", "X-Correlation-Id",
                                    "Authorization"])
def test_header_injection_is_refused_and_never_reflected(env, unchanged, header: str) -> None:
    token = env["clients"]["writer"].headers["authorization"].encode()
    body = json.dumps({"namespace": "hostile", "type": "t", "title": "inj", "content": "x"}).encode()
    for evil in (b"abc\rSet-Cookie: pwned=1", b"abc\nSet-Cookie: pwned=1", b"abc\r\n Set-Cookie: pwned=1",
                 b"abc\x00def", b"abc\x7fdef"):
        auth = b"Authorization: " + (evil if header == "Authorization" else token) + b"\r\n"
        extra = b"" if header == "Authorization" else header.encode() + b": " + evil + b"\r\n"
        head = (b"POST /v1/documents/" + env["doc"].encode() + b"/undo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + auth + extra + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        status, response = raw_request(env["base"], head, body)
        assert 400 <= status < 500, (header, evil, response[:300])
        assert b"pwned" not in response.split(b"\r\n\r\n")[0].lower(), response[:500]
    # Well-formed HTTP carrying values that are not valid for the header: a problem+json 4xx.
    writer = env["clients"]["writer"]
    bad = {"Idempotency-Key": "x" * 201, "If-Match": '"1" OR 1=1', "X-Session-Id": "a b;DROP",
           "X-Correlation-Id": "<script>", "Authorization": "Bearer ' OR 1=1 --"}[header]
    response = writer.post(f"/v1/documents/{env['doc']}/undo", headers={header: bad})
    refused(response)
    assert bad not in "".join(f"{k}: {v}" for k, v in response.headers.items() if k != "content-length")


def _read_routes(env) -> list[tuple[str, str, list[str]]]:
    """(role, path, filters) for every list and read route."""
    d, a, c = env["doc"], env["agent"], env["chain"]
    return [
        ("reader", "/v1/documents", ["namespace", "type", "tag", "session", "metadata.agent_type", "cursor",
                                     "limit", "min_position"]),
        ("reader", f"/v1/documents/{d}", ["min_position"]),
        ("reader", f"/v1/documents/{d}/versions", ["cursor", "limit"]),
        ("reader", f"/v1/documents/{d}/tags", ["tag"]),
        ("reader", f"/v1/documents/{d}/history", ["version", "as_of", "after_version", "limit"]),
        ("reader", f"/v1/documents/{d}/diff", ["from", "to"]),
        ("reader", "/v1/agents", ["name", "cursor", "limit"]),
        ("reader", f"/v1/agents/{a}/executions", ["cursor", "limit"]),
        ("reader", f"/v1/agents/{a}/history", ["as_of", "version"]),
        ("reader", "/v1/chains", ["name", "cursor", "limit"]),
        ("reader", f"/v1/chains/{c}", ["min_position"]),
        ("reader", f"/v1/chains/{c}/canvas", ["min_position"]),
        ("reader", f"/v1/chains/{c}/edges", ["min_position"]),
        ("reader", f"/v1/chains/{c}/history", ["as_of"]),
        ("auditor", "/v1/events", ["stream", "stream_type", "type", "actor", "session", "correlation_id", "since",
                                   "until", "cursor", "limit"]),
        ("auditor", f"/v1/streams/{d}/events", ["from_version", "to_version", "cursor"]),
        ("operator", "/v1/dead-letters", ["projection", "status", "stream_id", "limit"]),
    ]


def test_sql_injection_strings_in_every_filter(env, unchanged) -> None:
    clients = env["clients"]
    checked = 0
    for role, path, filters in _read_routes(env):
        for name in filters:
            for value in INJECTIONS:
                started = time.monotonic()
                response = clients[role].get(path, params={name: value})
                checked += 1
                assert response.status_code < 500, (path, name, value, response.text[:300])
                assert time.monotonic() - started < 4, (path, name, value, "slow: injected SQL ran?")
                if response.status_code >= 400:
                    assert_problem(response, response.status_code)
                else:  # a filter that matched nothing: an empty answer, never more rows
                    data = response.json()
                    lists = [v for v in data.values() if isinstance(v, list)]
                    assert all(len(v) == 0 for v in lists) or name in ("limit",), (path, name, value, data)
    # Injection through the path itself.
    for role, template in [("reader", "/v1/documents/{}"), ("reader", "/v1/agents/{}"), ("reader", "/v1/chains/{}"),
                           ("auditor", "/v1/streams/{}/events"), ("auditor", "/v1/events/{}"),
                           ("reader", "/v1/documents/{}/versions/1")]:
        for value in INJECTIONS[:11]:
            response = clients[role].get(template.format(quote(value, safe="")))
            checked += 1
            assert 400 <= response.status_code < 500, (template, value, response.text[:300])
            assert_problem(response, response.status_code)
    # The schema is intact and the keys table was not read out.
    assert clients["auditor"].get("/v1/events", params={"limit": 1}).status_code == 200
    assert checked > 500
