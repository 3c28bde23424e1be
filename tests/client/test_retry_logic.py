"""The client's own retry, backoff, If-Match and feed-resume logic, against httpx.MockTransport.

These tests are about the client's logic alone, so the transport is a stand-in: it drops
connections, times out and answers 5xx on cue. test_client_live.py runs the client against a
real server through a real TCP proxy.
"""

from __future__ import annotations

import json
import random

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicle_client import Chronicle, ConflictError, NotFound, RetryPolicy, ServerError, Unavailable, ValidationError

CREATED = {"stream_id": "d-1", "stream_version": 1, "position": 7, "appended": 1, "duplicate": False,
           "correlation_id": "c"}


def _client(handler, **options) -> tuple[Chronicle, list[float]]:
    slept: list[float] = []
    client = Chronicle("http://chronicle.test", "k", transport=httpx.MockTransport(handler), sleep=slept.append,
                       **options)
    return client, slept


def _created(request: httpx.Request, replayed: bool = False) -> httpx.Response:
    headers = {"ETag": '"1"', "X-Chronicle-Position": "7"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return httpx.Response(201, json=CREATED, headers=headers)


def _problem(status: int, code: str, field: str | None = None, **extra) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/problem+json"},
                          content=json.dumps({"type": "about:blank", "title": "x", "status": status, "code": code,
                                              "detail": f"{code} detail", "field": field, **extra}))


@pytest.mark.parametrize("failure", ["timeout", "dropped", "refused", "503", "500", "in_flight"])
def test_a_command_is_retried_with_the_same_idempotency_key(failure: str) -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) < 3:
            if failure == "timeout":
                raise httpx.ReadTimeout("slow", request=request)
            if failure == "dropped":
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
            if failure == "refused":
                raise httpx.ConnectError("refused", request=request)
            if failure == "in_flight":
                return _problem(409, "idempotency_key_in_flight", "Idempotency-Key")
            return _problem(int(failure), "service_unavailable")
        return _created(request, replayed=True)

    client, slept = _client(handler)
    result = client.documents.create("n", "memo", "T", content="x")
    assert len(keys) == 3 and len(set(keys)) == 1, keys
    assert result.stream_version == 1 and result.replayed and len(slept) == 2
    assert client.position == 7 and client.version_of("d-1") == 1


def test_each_command_has_a_key_of_its_own() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return _created(request)

    client, _ = _client(handler)
    client.documents.create("n", "memo", "T")
    client.documents.create("n", "memo", "T")
    client.documents.create("n", "memo", "T", idempotency_key="mine")
    assert len(set(keys)) == 3 and keys[2] == "mine"


def test_spent_attempts_raise_the_typed_error() -> None:
    client, slept = _client(lambda request: _problem(503, "service_unavailable"), retry=RetryPolicy(attempts=3))
    with pytest.raises(ServerError) as caught:
        client.documents.create("n", "memo", "T")
    assert caught.value.status == 503 and caught.value.code == "service_unavailable" and len(slept) == 2

    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset", request=request)

    client, slept = _client(dropped, retry=RetryPolicy(attempts=4))
    with pytest.raises(Unavailable):
        client.agents.get("a-1")
    assert len(slept) == 3


@pytest.mark.parametrize(("status", "code", "kind"), [
    (404, "document_not_found", NotFound), (422, "validation_error", ValidationError),
    (412, "precondition_failed", ConflictError), (409, "version_conflict", ConflictError),
])
def test_a_refusal_is_not_retried_and_carries_code_and_field(status: int, code: str, kind: type) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _problem(status, code, "title", current_stream_version=4)

    client, slept = _client(handler)
    with pytest.raises(kind) as caught:
        client.documents.update("d-1", title="")
    assert len(calls) == 1 and not slept
    assert caught.value.code == code and caught.value.field == "title" and caught.value.detail


def test_retry_after_is_honoured_and_capped() -> None:
    answers = iter([httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(429, headers={"Retry-After": "99"}),
                    _created(None)])
    client, slept = _client(lambda request: next(answers), retry=RetryPolicy(max_delay=5.0))
    client.documents.create("n", "memo", "T")
    assert slept == [2.0, 5.0]


@settings(max_examples=200, deadline=None)
@given(attempt=st.integers(1, 30), base=st.floats(0.001, 2), cap=st.floats(0.01, 60), seed=st.integers())
def test_backoff_grows_within_its_cap(attempt: int, base: float, cap: float, seed: int) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap, rng=random.Random(seed))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert 0 <= policy.delay(attempt) <= ceiling
    assert RetryPolicy(base_delay=base, max_delay=cap, jitter=False).delay(attempt) == ceiling


def test_if_match_carries_the_last_version_seen_and_a_412_teaches_the_current_one() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("If-Match"))
        if request.method == "GET":
            return httpx.Response(200, headers={"ETag": '"3"'}, json={
                "document_id": "d-1", "namespace": "n", "type": "memo", "title": "T", "document_version": 2,
                "stream_version": 3})
        if request.headers.get("If-Match") == '"3"':
            return httpx.Response(412, headers={"ETag": '"5"', "content-type": "application/problem+json"},
                                  json={"status": 412, "code": "precondition_failed", "detail": "moved",
                                        "field": "If-Match", "current_stream_version": 5})
        return httpx.Response(200, headers={"ETag": '"6"', "X-Chronicle-Position": "30"},
                              json={**CREATED, "stream_version": 6, "position": 30})

    client, _ = _client(handler)
    client.documents.update("d-1", content="a")          # nothing seen yet: no precondition
    client.documents.get("d-1")                          # learns version 3 from the ETag
    with pytest.raises(ConflictError) as caught:
        client.documents.update("d-1", content="b")      # If-Match "3": refused, the stream is at 5
    assert caught.value.current_stream_version == 5 and client.version_of("d-1") == 5
    client.documents.update("d-1", content="c")          # If-Match "5"
    client.documents.update("d-1", content="d", if_match=None)
    client.documents.update("d-1", content="e", if_match=2)
    assert sent == [None, None, '"3"', '"5"', None, '"2"']


def test_reads_wait_for_the_clients_own_writes() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            seen.append(request.url.params.get("min_position"))
            return httpx.Response(200, json={"agents": []})
        return _created(request)

    client, _ = _client(handler)
    client.agents.list()
    client.agents.create("A", "p", "m")
    client.agents.list()
    assert seen == [None, "7"]
    client, _ = _client(handler, read_your_writes=False)
    client.agents.create("A", "p", "m")
    client.agents.list()
    assert seen[-1] is None


def _event(position: int) -> dict:
    return {"position": position, "event_id": f"e{position}", "stream_id": "s", "stream_type": "document",
            "stream_version": position, "type": "document.updated", "schema_version": 1, "payload": {},
            "recorded_at": "2026-01-01T00:00:00+00:00"}


class _Dropping(httpx.SyncByteStream):
    """A feed body that sends its lines, then fails as a dropped connection would."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines

    def __iter__(self):
        yield from self.lines
        raise httpx.ReadError("connection reset")


@pytest.mark.parametrize("format", ["ndjson", "sse"])
def test_a_subscription_resumes_after_its_last_position_and_drops_repeats(format: str) -> None:
    requests: list[httpx.Request] = []

    def frame(position: int) -> bytes:
        if format == "ndjson":
            return (json.dumps(_event(position)) + "\n").encode()
        return f"id: {position}\nevent: document.updated\ndata: {json.dumps(_event(position))}\n\n".encode()

    # The server has read through 9 (an NDJSON heartbeat says so; an SSE one carries no position).
    beat = b'{"heartbeat": true, "position": 9}\n' if format == "ndjson" else b": heartbeat\n\n"
    bodies = iter([
        [frame(1), frame(2), frame(3)[:20]],          # dropped in the middle of event 3
        None,                                         # 503 on the reconnect
        [frame(2), frame(3), beat],                   # 2 again (dropped as a repeat), 3, heartbeat
        [frame(10)],
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = next(bodies)
        return _problem(503, "service_unavailable") if body is None else httpx.Response(200, stream=_Dropping(body))

    client, slept = _client(handler)
    got = []
    subscription = client.subscribe(after=0, types=["document.updated"], stream_id="s", format=format)
    for event in subscription:
        got.append(event.position)
        if len(got) == 4:
            break
    assert got == [1, 2, 3, 10] and len(slept) == 3 and subscription.position == 10
    assert requests[0].headers["Accept"] == {"ndjson": "application/x-ndjson", "sse": "text/event-stream"}[format]
    assert requests[0].url.params.get_list("type") == ["document.updated"]
    assert requests[0].url.params.get_list("stream_id") == ["s"]
    if format == "ndjson":
        assert [r.url.params["after"] for r in requests] == ["0", "2", "2", "9"]
    else:
        assert [r.headers.get("Last-Event-ID") for r in requests] == [None, "2", "2", "3"]


def test_a_refused_subscription_raises_at_once() -> None:
    client, slept = _client(lambda request: _problem(422, "unknown_query_parameter", "tpye"))
    with pytest.raises(ValidationError) as caught:
        next(iter(client.subscribe()))
    assert caught.value.field == "tpye" and not slept


def _group_handler(log: list[tuple[str, str, object]]):
    """A stand-in for the group routes: member m1's lease is lost after one batch; m2 joins again."""
    joins = iter(["m1", "m2"])
    batches = {"m1": iter([[_event(1), {**_event(2), "stream_id": "t"}, _event(3)], None])}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        log.append((request.method, path, body))
        if path == "/v1/groups/g/members":
            member = next(joins)
            return httpx.Response(201, json={"member_id": member, "group": "g", "lease_expires_at": "later",
                                             "partitions": [0, 1]})
        member = path.split("/")[5]
        if path.endswith("/events"):
            events = next(batches.get(member, iter([[]])))
            if events is None:
                return _problem(410, "member_expired")
            return httpx.Response(200, json={"events": [{**e, "partition": 0} for e in events], "partitions": [0]})
        if path.endswith("/heartbeat"):
            return _problem(404, "member_not_found") if member == "m1" else httpx.Response(
                200, json={"member_id": member, "group": "g", "lease_expires_at": "later", "partitions": [1]})
        return httpx.Response(204 if request.method == "DELETE" else 200, json=None if request.method == "DELETE"
                              else {"acked": True})
    return handler


def test_a_member_acks_nacks_skips_the_parked_stream_and_joins_again() -> None:
    log: list[tuple[str, str, object]] = []
    client, _ = _client(_group_handler(log))
    seen: list[int] = []

    def handle(event) -> None:
        if event.position == 1:
            raise RuntimeError("no mail server")
        seen.append(event.position)

    member = client.member("g", handle, name="worker-1", lease_seconds=9)
    assert member.join().member_id == "m1" and log[0][2] == {"name": "worker-1", "lease_seconds": 9}
    assert member.poll() == 1 and seen == [2]          # 1 raised: nacked; 3 is parked behind it on stream s
    acks = [(p.rsplit("/", 1)[1], b) for m, p, b in log if p.endswith(("/ack", "/nack"))]
    # One ack for the batch, at the position it reached (the parked event 3 is the server's now).
    assert acks == [("nack", {"position": 1, "error": "RuntimeError: no mail server"}), ("ack", {"position": 3})]
    assert member.poll() == 0 and member.membership.member_id == "m2"   # 410: the lease was lost, joined again
    assert member.heartbeat().partitions == [1] and (member.handled, member.nacked, member.joins) == (1, 1, 2)
    member.leave()
    assert log[-1][:2] == ("DELETE", "/v1/groups/g/members/m2") and member.membership is None


def test_the_asyncio_member_and_subscription() -> None:
    import asyncio

    from chronicle_client import AsyncChronicle

    log: list[tuple[str, str, object]] = []
    group = _group_handler(log)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/subscribe":
            lines = "".join(json.dumps(_event(p)) + "\n" for p in (4, 5))
            return httpx.Response(200, content=lines.encode())
        return group(request)

    async def scenario() -> tuple[list[int], list[int]]:
        async def no_wait(seconds: float) -> None:
            return None

        handled: list[int] = []

        async def handle(event) -> None:
            handled.append(event.position)

        async with AsyncChronicle("http://chronicle.test", "k", transport=httpx.MockTransport(handler),
                                  sleep=no_wait) as client:
            member = client.member("g", handle)
            await member.join()
            await member.poll()
            got = []
            async for event in client.subscribe(after=3):
                got.append(event.position)
                if len(got) == 2:
                    break
            return handled, got

    assert asyncio.run(scenario()) == ([1, 2, 3], [4, 5])
