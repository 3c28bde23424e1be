"""GET /v1/subscribe against a real server: every matching event exactly once, in position order.

Hypothesis drives concurrent writers, one of which holds its transaction open until another
writer has committed later positions, while clients of three kinds (httpx-sse, a plain line
reader, NDJSON) disconnect after random numbers of events and reconnect with Last-Event-ID.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrastructure.event_store import ANY
from tests.api.conftest import assert_problem
from tests.subscriptions.conftest import KEY_CREATED, KEY_REVOKED, append, log_head, new_event
from tests.subscriptions.feed_clients import READERS

KINDS = st.sampled_from([KEY_CREATED, KEY_REVOKED])
# Filters over an example's streams 0-3, its holder's stream, and its begin and end streams (every
# filter lets both through: a client is following once it has read the first, and stops at the second).
FILTERS = ["all", "created", "some_streams", "types_and_stream_type", "holder_and_types"]


def _params(name: str, streams: list[str], hold: str, end: str, begin: str) -> dict[str, Any]:
    return {
        "all": {},
        "created": {"type": [KEY_CREATED]},
        "some_streams": {"stream_id": [begin, streams[0], streams[2], end]},
        "types_and_stream_type": {"type": [KEY_CREATED, KEY_REVOKED], "stream_type": ["operator"]},
        "holder_and_types": {"stream_id": [begin, streams[1], hold, end], "type": [KEY_REVOKED, KEY_CREATED]},
    }[name]


def _expected(pool, start: int, end_position: int, params: dict[str, Any]) -> list[int]:
    """The positions a feed with these filters must send in (start, end_position], from the table."""
    clauses, args = ["position > %s", "position <= %s"], [start, end_position]
    for column, key in (("type", "type"), ("stream_type", "stream_type"), ("stream_id", "stream_id")):
        if key in params:
            clauses.append(f"{column} = ANY(%s)")
            args.append(params[key])
    with pool.connection() as conn:
        rows = conn.execute(f"SELECT position FROM events WHERE {' AND '.join(clauses)} ORDER BY position",
                            args).fetchall()
    return [r["position"] for r in rows]


def _follow(base: str, token: str, reader: str, params: dict[str, Any], start: int, breaks: list[int],
            end_stream: str, out: list[tuple[int, dict[str, Any]]], ready: threading.Event,
            errors: list[BaseException]) -> None:
    """Read until the end stream's event, dropping the connection after each `breaks` count of events.

    `ready` is set at the first event (the example's begin event): the client is following."""
    breaks, last = list(breaks), None
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(30, read=20)) as client:
            while True:
                limit = breaks.pop(0) if breaks else None
                headers = {} if last is None else {"Last-Event-ID": str(last)}
                got = 0
                if limit == 0:
                    # Connect and drop at once, before any event.
                    with client.stream("GET", "/v1/subscribe", params={**params, "after": start},
                                       headers=headers) as response:
                        assert response.status_code == 200
                    continue
                for position, item in READERS[reader](client, {**params, "after": start}, headers):
                    out.append((position, item))
                    ready.set()
                    last, got = position, got + 1
                    if item["stream_id"] == end_stream:
                        return
                    if limit is not None and got >= limit:
                        break  # drop the connection mid-feed; reconnect with Last-Event-ID
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _write(store, streams: list[str], plan: list[tuple[int, str]], counter: list[int],
           progress: threading.Condition) -> None:
    for n, (index, kind) in enumerate(plan):
        append(store, streams[index], kind, n)
        with progress:
            counter[0] += 1
            progress.notify_all()


def _hold(store, stream: str, kind: str, until: int, linger: float, counter: list[int],
          progress: threading.Condition, appended: threading.Event) -> None:
    """Append in an open transaction; commit once `until` other appends have committed after it, and
    `linger` seconds more (time for the feeds to read the log while it is still open)."""
    with store.transaction() as conn:
        result = store.append_on(conn, stream, ANY, [new_event(kind)], stream_type="operator")
        appended.set()
        with progress:
            progress.wait_for(lambda: counter[0] >= until, timeout=60)
        time.sleep(linger)
    store.committed([result])


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    writers=st.lists(st.lists(st.tuples(st.integers(0, 3), KINDS), min_size=1, max_size=12), min_size=1, max_size=3),
    hold_kind=KINDS,
    hold_until=st.integers(1, 6),
    linger=st.sampled_from([0.0, 0.2, 0.5]),
    clients=st.lists(st.tuples(st.sampled_from(sorted(READERS)), st.sampled_from(FILTERS),
                               st.lists(st.integers(0, 6), max_size=4)), min_size=2, max_size=4),
)
def test_every_client_sees_every_matching_event_once_in_order(
    feed_server, feed_tokens, feed_pool, feed_store, writers, hold_kind, hold_until, linger, clients,
) -> None:
    tag = uuid.uuid4().hex[:8]
    streams = [f"feed-{tag}-{i}" for i in range(4)]
    hold, end, begin = f"feed-{tag}-hold", f"feed-{tag}-end", f"feed-{tag}-begin"
    readies = [threading.Event() for _ in clients]
    start = log_head(feed_pool)
    outs: list[list] = [[] for _ in clients]
    errors: list[BaseException] = []
    followers = [
        threading.Thread(target=_follow, args=(feed_server, feed_tokens["subscriber"], reader,
                                               _params(name, streams, hold, end, begin), start, breaks, end, outs[i],
                                               readies[i], errors))
        for i, (reader, name, breaks) in enumerate(clients)
    ]
    for thread in followers:
        thread.start()
    append(feed_store, begin, KEY_CREATED)
    assert all(ready.wait(60) for ready in readies), "a client never received the begin event"
    counter, progress = [0], threading.Condition()
    total = sum(len(plan) for plan in writers)
    appended = threading.Event()
    holder = threading.Thread(target=_hold, args=(feed_store, hold, hold_kind, min(hold_until, total), linger,
                                                  counter, progress, appended))
    holder.start()
    assert appended.wait(30)  # the others draw later positions and commit while it is open
    threads = [threading.Thread(target=_write, args=(feed_store, streams, plan, counter, progress))
               for plan in writers]
    for thread in threads:
        thread.start()
    for thread in [*threads, holder]:
        thread.join(60)
    end_position = append(feed_store, end, KEY_CREATED).positions[-1]
    for thread in followers:
        thread.join(90)
        assert not thread.is_alive(), "a client never received the end event"
    assert not errors, errors
    for (reader, name, breaks), out in zip(clients, outs):
        expected = _expected(feed_pool, start, end_position, _params(name, streams, hold, end, begin))
        assert [p for p, _ in out] == expected, (reader, name, breaks)


def test_feed_items_are_the_event_log_items(feed_server, feed_tokens, feed_pool, feed_store, subscriber) -> None:
    stream = f"feed-shape-{uuid.uuid4().hex[:8]}"
    start = log_head(feed_pool)
    for n in range(3):
        append(feed_store, stream, KEY_CREATED, n)
    sent = []
    for position, item in READERS["plain"](subscriber, {"after": start, "stream_id": stream}, {}):
        sent.append(item)
        if len(sent) == 3:
            break
    with httpx.Client(base_url=feed_server, headers={"Authorization": f"Bearer {feed_tokens['auditor']}"}) as audit:
        listed = audit.get("/v1/events", params={"stream": stream}).json()["events"]
    for item in (*sent, *listed):
        item["recorded_at"] = datetime.fromisoformat(item["recorded_at"])
    assert sent == listed


def test_ndjson_heartbeats_carry_the_position(subscriber, feed_pool, feed_store) -> None:
    stream = f"feed-quiet-{uuid.uuid4().hex[:8]}"
    position = append(feed_store, stream).positions[-1]
    lines = []
    with subscriber.stream("GET", "/v1/subscribe", params={"after": position - 1, "stream_id": stream},
                           headers={"Accept": "application/x-ndjson"}) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        for line in response.iter_lines():
            lines.append(line)
            if '"heartbeat"' in line:
                break
    assert '"position"' in lines[0] and lines[-1].startswith('{"heartbeat": true, "position": ')
    assert int(lines[-1].split(":")[-1].rstrip("}")) >= position


def test_open_feeds_are_listed_for_operators(subscriber, operator, feed_tokens, feed_server) -> None:
    with subscriber.stream("GET", "/v1/subscribe", params={"type": KEY_REVOKED}) as response:
        subscription_id = response.headers["X-Chronicle-Subscription"]
        listed = operator.get("/v1/subscriptions").json()["subscriptions"]
        mine = [s for s in listed if s["id"] == subscription_id]
        assert mine and mine[0]["filters"]["type"] == [KEY_REVOKED] and mine[0]["format"] == "sse"
        assert mine[0]["key_id"] == feed_tokens["subscriber"].split("_")[1]
    # The server notices the closed connection at its next write (a heartbeat) and forgets the feed.
    with subscriber.stream("GET", "/v1/subscribe", params={"stream_id": "never-written"}) as response:
        for line in response.iter_lines():
            if line.startswith(": heartbeat"):
                ids = {s["id"] for s in operator.get("/v1/subscriptions").json()["subscriptions"]}
                if subscription_id not in ids:
                    break
    assert_problem(httpx.get(f"{feed_server}/v1/subscriptions",
                             headers={"Authorization": f"Bearer {feed_tokens['subscriber']}"}), 403, "forbidden")


@pytest.mark.parametrize(("params", "headers", "status", "code", "field"), [
    ({"after": -1}, {}, 422, None, None),
    ({"type": "document.nonsense"}, {}, 422, "unknown_event_type", "type"),
    ({"stream_type": "nonsense"}, {}, 422, "unknown_stream_type", "stream_type"),
    ({"aftr": 3}, {}, 422, "unknown_query_parameter", "aftr"),
    ({}, {"Last-Event-ID": "abc"}, 422, "invalid_header", "Last-Event-ID"),
    ({}, {"Accept": "application/json"}, 406, "not_acceptable", "Accept"),
])
def test_bad_requests_are_refused_by_name(subscriber, params, headers, status, code, field) -> None:
    assert_problem(subscriber.get("/v1/subscribe", params=params, headers=headers), status, code, field)


def test_only_subscribing_roles_follow_the_log(feed_server, feed_tokens) -> None:
    assert_problem(httpx.get(f"{feed_server}/v1/subscribe"), 401, "unauthorized")
    reader = httpx.get(f"{feed_server}/v1/subscribe", headers={"Authorization": f"Bearer {feed_tokens['reader']}"})
    assert_problem(reader, 403, "forbidden")
