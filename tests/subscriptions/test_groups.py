"""Consumer groups against a real server: member processes, a SIGKILL mid-batch, a late joiner,
and parking from a nack to an operator's retry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx

from tests.api.conftest import ROOT, assert_problem
from tests.subscriptions.conftest import append, log_head

STREAMS = 24
EVENTS = 600


def _member(base: str, token: str, group: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.subscriptions.group_member", base, token, group, str(out)],
                            cwd=ROOT)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait(condition, what: str, seconds: float = 120) -> None:
    """Wait for a condition the system must reach; fail naming it if it never does (a hang guard)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def test_members_share_the_log_survive_a_kill_and_rebalance(feed_server, feed_tokens, feed_pool, feed_store,
                                                            operator, tmp_path) -> None:
    group, token = f"g-{uuid.uuid4().hex[:8]}", feed_tokens["subscriber"]
    streams = [f"grp-{uuid.uuid4().hex[:6]}-{i}" for i in range(STREAMS)]
    outs = [tmp_path / f"member-{i}.log" for i in range(4)]
    procs = [_member(feed_server, token, group, outs[i]) for i in range(3)]
    writer = threading.Thread(target=lambda: [append(feed_store, streams[n % STREAMS], n=n) for n in range(EVENTS)])
    try:
        writer.start()
        # Kill the first member inside a batch: it has handled events it has not acked.
        _wait(lambda: len(_lines(outs[0])) > 40 and _lines(outs[0])[-1].startswith("E"), "member 0 mid-batch")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        procs.append(_member(feed_server, token, group, outs[3]))
        writer.join()
        with feed_pool.connection() as conn:  # nothing is in flight: the head, unless positions were skipped
            head = conn.execute("SELECT safe_position() AS s").fetchone()["s"]

        def caught_up() -> bool:
            status = operator.get(f"/v1/groups/{group}").json()
            return all(p["checkpoint"] == head for p in status["partitions"])

        _wait(caught_up, "every checkpoint at the head")
        status = operator.get(f"/v1/groups/{group}").json()
        assert status["lag_events"] == 0 and status["dead_letters"] == 0
        alive = [m for m in status["members"] if m["alive"]]
        assert len(alive) == 3 and sorted(p for m in alive for p in m["partitions"]) == list(range(16))
    finally:
        for proc in procs[1:]:
            proc.terminate()
        for proc in procs[1:]:
            proc.wait(30)
    handled: dict[int, list[tuple[int, str, int]]] = defaultdict(list)  # position -> (time, stream, version)
    for out in outs:
        for line in _lines(out):
            if line.startswith("E "):
                _, position, stream, version, at = line.split()
                handled[int(position)].append((int(at), stream, int(version)))
    with feed_pool.connection() as conn:
        expected = {r["position"]: (r["stream_id"], r["version"]) for r in conn.execute(
            "SELECT position, stream_id, version FROM events WHERE position <= %s", (head,)).fetchall()}
    missing = sorted(set(expected) - set(handled))
    assert not missing, f"never handled: {missing[:20]}"
    # Per stream, the first handling of each event comes in version order.
    first: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for position, handlings in handled.items():
        at, stream, version = min(handlings)
        assert (stream, version) == expected[position]
        first[stream].append((at, version))
    for stream, seen in first.items():
        versions = [v for _, v in sorted(seen)]
        assert versions == sorted(versions), (stream, versions)
    twice = sum(len(h) - 1 for h in handled.values())
    print(f"\nconsumer group: {len(expected)} events, {twice} handled more than once")


def _join(client: httpx.Client, group: str, **body) -> dict:
    response = client.post(f"/v1/groups/{group}/members", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _to_head(subscriber: httpx.Client, base: str, pool) -> None:
    """Fetch and ack up to the log's head, so the member sees only the test's own events next."""
    head = log_head(pool)
    while (read := subscriber.get(f"{base}/events", params={"limit": 1000}).json()["position"]) < head:
        subscriber.post(f"{base}/ack", json={"position": read})
    subscriber.post(f"{base}/ack", json={"position": head})


def test_a_nack_parks_the_stream_until_an_operator_retries(subscriber, operator, feed_store, feed_pool) -> None:
    group = f"p-{uuid.uuid4().hex[:8]}"
    member = _join(subscriber, group, name="parker")
    base = f"/v1/groups/{group}/members/{member['member_id']}"
    _to_head(subscriber, base, feed_pool)
    bad, good = f"park-{uuid.uuid4().hex[:6]}", f"park-{uuid.uuid4().hex[:6]}"
    positions = [append(feed_store, s, n=n).positions[0] for n, s in enumerate([bad, good, bad, good, bad])]
    batch = subscriber.get(f"{base}/events", params={"wait": 5}).json()
    assert [e["position"] for e in batch["events"]] == positions
    parked = subscriber.post(f"{base}/nack", json={"position": positions[2], "error": "no such customer"}).json()
    assert [p["position"] for p in parked["parked"]] == [positions[2], positions[4]]
    subscriber.post(f"{base}/ack", json={"position": positions[-1]})
    later = append(feed_store, bad, n=9).positions[0]  # parked behind, never delivered
    assert subscriber.get(f"{base}/events").json()["events"] == []
    listed = operator.get("/v1/dead-letters", params={"group": group}).json()["dead_letters"]
    assert [(d["position"], d["projection"]) for d in listed] == [(p, f"group:{group}") for p in
                                                                  (positions[2], positions[4], later)]
    assert listed[0]["error"] == "no such customer" and "parked behind" in listed[1]["error"]
    status = operator.get(f"/v1/groups/{group}").json()
    assert status["dead_letters"] == 3
    assert_problem(subscriber.post(f"{base}/nack", json={"position": positions[1], "error": "x"}), 409,
                   "not_delivered", "position")
    retried = operator.post(f"/v1/dead-letters/{listed[0]['id']}/retry").json()
    assert retried["resumed"] == [bad]
    again = subscriber.get(f"{base}/events").json()  # then the retry's own operator event
    assert [e["position"] for e in again["events"] if e["stream_id"] == bad] == [positions[2], positions[4], later]
    subscriber.post(f"{base}/ack", json={"position": again["position"]})
    assert subscriber.get(f"{base}/events").json()["events"] == []
    assert operator.get("/v1/dead-letters", params={"group": group}).json()["dead_letters"] == []
    assert operator.get(f"/v1/groups/{group}").json()["dead_letters"] == 0


def test_leases_expire_and_partitions_move(subscriber, operator) -> None:
    group = f"l-{uuid.uuid4().hex[:8]}"
    first = _join(subscriber, group, lease_seconds=1)
    second = _join(subscriber, group, lease_seconds=30)
    base = f"/v1/groups/{group}/members"
    assert first["partitions"] == list(range(16))  # alone when it joined
    now_first = subscriber.post(f"{base}/{first['member_id']}/heartbeat").json()["partitions"]
    assert sorted(now_first + second["partitions"]) == list(range(16)) and len(now_first) == 8
    # The first stops heartbeating: once its lease runs out the second owns everything.
    _wait(lambda: subscriber.post(f"{base}/{second['member_id']}/heartbeat").json()["partitions"] == list(range(16)),
          "the expired member's partitions moved")
    assert_problem(subscriber.post(f"{base}/{first['member_id']}/heartbeat"), 410, "member_expired", "member_id")
    third = _join(subscriber, group)
    assert third["partitions"] and len(third["partitions"]) == 8
    assert subscriber.delete(f"{base}/{third['member_id']}").status_code == 204
    assert subscriber.post(f"{base}/{second['member_id']}/heartbeat").json()["partitions"] == list(range(16))
    assert_problem(subscriber.post(f"{base}/{uuid.uuid4()}/heartbeat"), 404, "member_not_found", "member_id")
    assert_problem(operator.get("/v1/groups/no-such-group"), 404, "group_not_found")
    assert_problem(subscriber.post(f"/v1/groups/{group}/members", json={"lease_seconds": 0}), 422)
    assert_problem(subscriber.get("/v1/groups"), 403, "forbidden")


def test_a_skipped_event_is_never_delivered_again_and_its_stream_resumes(subscriber, operator, feed_store,
                                                                          feed_pool) -> None:
    group = f"s-{uuid.uuid4().hex[:8]}"
    base = f"/v1/groups/{group}/members/{_join(subscriber, group)['member_id']}"
    _to_head(subscriber, base, feed_pool)
    stream = f"skip-{uuid.uuid4().hex[:6]}"
    positions = [append(feed_store, stream, n=n).positions[0] for n in range(3)]
    batch = subscriber.get(f"{base}/events", params={"wait": 5}).json()
    assert [e["position"] for e in batch["events"]] == positions
    subscriber.post(f"{base}/nack", json={"position": positions[1], "error": "poison"})
    subscriber.post(f"{base}/ack", json={"position": positions[-1]})
    parked = operator.get("/v1/dead-letters", params={"group": group}).json()["dead_letters"]
    assert [d["position"] for d in parked] == positions[1:]
    skipped = operator.post(f"/v1/dead-letters/{parked[0]['id']}/skip").json()
    assert skipped["resumed"] == [stream]
    again = subscriber.get(f"{base}/events").json()
    assert [e["position"] for e in again["events"] if e["stream_id"] == stream] == [positions[2]]
    subscriber.post(f"{base}/ack", json={"position": again["position"]})
    assert operator.get("/v1/dead-letters", params={"group": group, "status": "skipped"}).json()["dead_letters"][0][
        "position"] == positions[1]
