"""A consumer-group member process for the tests: fetch, handle (write a line), ack; rejoin if expired.

    python -m tests.subscriptions.group_member BASE TOKEN GROUP OUT

Each handled event is one line `E <position> <stream_id> <stream_version> <monotonic ns>`, written
(unbuffered) before the next; `B` starts a batch and `A` follows its ack, so a test can kill the
process inside a batch. SIGTERM makes it leave the group.
"""

from __future__ import annotations

import signal
import sys
import time

import httpx

LEASE_SECONDS = 2


def main(base: str, token: str, group: str, out_path: str) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    members = f"/v1/groups/{group}/members"
    join = {"name": out_path, "lease_seconds": LEASE_SECONDS}
    member = client.post(members, json=join).json()["member_id"]
    with open(out_path, "a", buffering=1) as out:
        while not stopping:
            response = client.get(f"{members}/{member}/events", params={"limit": 20, "wait": 1})
            if response.status_code in (404, 410):  # the lease ran out: join again
                member = client.post(members, json=join).json()["member_id"]
                continue
            response.raise_for_status()
            batch = response.json()
            out.write("B\n")
            for event in batch["events"]:
                time.sleep(0.003)  # the handler's work
                out.write(f"E {event['position']} {event['stream_id']} {event['stream_version']} "
                          f"{time.monotonic_ns()}\n")
            acked = client.post(f"{members}/{member}/ack", json={"position": max(batch["position"], 1)})
            if acked.status_code in (404, 410):
                continue
            acked.raise_for_status()
            out.write("A\n")
    client.delete(f"{members}/{member}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
