"""The client's subscription and group member against a real `chronicle up`.

This module uses only `chronicle_client`, the standard library and the stdlib TCP proxy of
dropping_proxy.py, which here cuts a live feed so the subscription has to resume.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from chronicle_client import Chronicle, Event, GroupMember, RetryPolicy
from tests.client.dropping_proxy import DroppingProxy

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def writer(server: str, tokens: dict[str, str]):
    with Chronicle(server, tokens["writer"]) as client:
        yield client


@pytest.fixture
def follower_key(subscriber_token: str) -> str:
    """A key whose role may subscribe and join groups."""
    return subscriber_token


def _until(condition, what: str, seconds: float = 60) -> None:
    """Wait for a condition the test drives towards (a bound, not a speed target)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("format", ["ndjson", "sse"])
def test_a_subscription_resumes_after_a_cut_and_sees_each_event_once(
        format: str, server: str, follower_key: str, writer: Chronicle) -> None:
    docs = [writer.documents.create("feed", "memo", f"Doc {i}", content="v1") for i in range(3)]
    ids = [d.stream_id for d in docs]
    expected = [d.position for d in docs]
    proxy = DroppingProxy(urlsplit(server).port)
    got: list[Event] = []
    try:
        with Chronicle(proxy.url, follower_key, retry=RetryPolicy(base_delay=0.05)) as follower:
            subscription = follower.subscribe(stream_id=ids, format=format)
            for event in subscription:
                got.append(event)
                if len(got) == 3:
                    proxy.arm()  # the next bytes of this feed never arrive: the connection is cut
                    for doc_id in ids:
                        expected.append(writer.documents.update(doc_id, content="v2").position)
                if len(got) == 6:
                    break
    finally:
        proxy.close()
    assert proxy.dropped == 1 and subscription.connections >= 2
    assert [e.position for e in got] == expected
    assert [e.type for e in got] == ["document.created"] * 3 + ["document.updated"] * 3
    assert {e.stream_id for e in got} == set(ids)


def test_a_group_member_handles_acks_parks_and_gets_a_retried_event_again(
        server: str, follower_key: str, tokens: dict[str, str], writer: Chronicle) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    ns = f"grp-{uuid.uuid4().hex[:8]}"
    handled: list[Event] = []
    bad = str(uuid.uuid4())
    healed = threading.Event()

    def handle(event: Event) -> None:
        if event.stream_id == bad and not healed.is_set():
            raise ValueError("cannot handle this document")
        handled.append(event)

    def versions(stream_id: str) -> list[int]:
        return [e.stream_version for e in handled if e.stream_id == stream_id]

    with Chronicle(server, follower_key) as follower:
        member: GroupMember = follower.member(group, handle, name="m1", wait=1, heartbeat_every=0.5)
        runner = threading.Thread(target=member.run, daemon=True)
        runner.start()
        try:
            made = [writer.documents.create(ns, "memo", f"G{i}", content="v1", document_id=bad if i == 0 else None)
                    for i in range(4)]
            for m in made:
                writer.documents.update(m.stream_id, content="v2")
            good = [m.stream_id for m in made[1:]]
            _until(lambda: all(set(versions(s)) == {1, 2} for s in good), "the member to handle every event")
            _until(lambda: member.nacked >= 1, "the poisoned event to be nacked")
            assert versions(bad) == []
            # An operator retries the parked event once the handler is fixed: it is delivered again.
            with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {tokens['operator']}"}) as ops:
                parked = ops.get("/v1/dead-letters", params={"group": group, "stream_id": bad}).json()["dead_letters"]
                assert parked and parked[0]["stream_id"] == bad
                healed.set()
                assert ops.post(f"/v1/dead-letters/{parked[0]['id']}/retry").status_code == 200
            _until(lambda: set(versions(bad)) == {1, 2}, "the retried events to be handled")
        finally:
            member.stop()
            runner.join(timeout=30)
    assert not runner.is_alive() and member.membership is None and member.joins == 1
    for stream_id in [m.stream_id for m in made]:
        assert versions(stream_id) == sorted(versions(stream_id))  # each stream in order


def test_the_readme_group_member_runs(server: str, follower_key: str, writer: Chronicle) -> None:
    text = README.read_text()
    start = text.index("A group member in ten lines")
    begin = text.index("```python\n", start) + len("```python\n")
    code = text[begin:text.index("```", begin)]
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    env = {"CHRONICLE_URL": server, "CHRONICLE_KEY": follower_key, "PATH": ""}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        made = writer.documents.create("readme", "memo", "Read me", content="v1")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        _until(lambda: any(made.stream_id in line for line in lines), "the README member to print the event")
    finally:
        proc.send_signal(2)  # Ctrl-C: the member leaves the group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert f"{made.position} document.created {made.stream_id}\n" in lines


def test_heartbeats_keep_the_lease_through_a_slow_handler(server: str, follower_key: str,
                                                          writer: Chronicle) -> None:
    group = f"slow-{uuid.uuid4().hex[:8]}"
    handled: list[Event] = []

    def slow(event: Event) -> None:
        if not handled:
            time.sleep(4)  # twice the lease: only the heartbeats keep it
        handled.append(event)

    with Chronicle(server, follower_key) as follower:
        member = follower.member(group, slow, lease_seconds=2, heartbeat_every=0.3, wait=1)
        runner = threading.Thread(target=member.run, daemon=True)
        runner.start()
        try:
            made = writer.documents.create("slow", "memo", "Slow", content="v1")
            _until(lambda: any(e.stream_id == made.stream_id for e in handled), "the slow handler to finish")
        finally:
            member.stop()
            runner.join(timeout=30)
    assert member.joins == 1  # the lease never ran out: the ack after the slow batch was accepted
