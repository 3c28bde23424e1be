"""A long-open transaction: another client appends and then sits in its transaction.

The log is held back below its position: the API names the session doing it (pid, position,
since when), reads waiting for a later position answer a bounded 503, the projections do not
move past the held position (nothing is skipped), and they resume once it commits. Meanwhile
the hold is visible: projection lag (measured to the head) grows, GET /v1/events says since
when the log is held back, and /readyz answers 503 once that is longer than the limit.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.api.conftest import assert_problem
from tests.reliability.conftest import clients_for, create_keys, make_pool, start_api, wait_projected
from tests.support import HeldAppend


HELD_LIMIT = 1.0  # seconds the log may be held back before /readyz degrades


def _lag(status: dict) -> tuple[int, float]:
    """Unapplied events and the oldest one's age, over every partition of every projection."""
    partitions = [p for projection in status["projections"] for p in projection["partitions"]]
    return sum(p["lag_events"] for p in partitions), max(p["lag_seconds"] for p in partitions)


@pytest.mark.timeout(180)
def test_an_open_transaction_is_reported_holds_readers_back_and_they_resume(rel_database_url: str,
                                                                           tmp_path: Path) -> None:
    tokens = create_keys(rel_database_url, ("writer", "operator", "reader", "auditor"))
    base, server = start_api(rel_database_url, tmp_path, CHRONICLE_LOG_HELD_BACK_LIMIT_SECONDS=str(HELD_LIMIT))
    clients = clients_for(base, tokens)
    writer, operator = clients["writer"], clients["operator"]
    pool = make_pool(rel_database_url, 2, "reliability-holder")
    held = HeldAppend(pool, "long-transaction-test")
    try:
        body = {"namespace": "hold", "type": "session_context", "title": "before", "content": "x"}
        assert writer.post("/v1/documents", json=body).status_code == 201
        wait_projected(operator)

        held.start()
        created = writer.post("/v1/documents", json={**body, "title": "during"})
        assert created.status_code == 201, created.text  # writers are not blocked
        doc, position = created.json()["stream_id"], created.json()["position"]
        assert position > held.position

        # The API names the transaction holding the log back.
        report = operator.get("/v1/log/blockers").json()
        assert report["safe_position"] == held.position - 1, report
        [blocker] = report["blockers"]
        assert blocker["pid"] == held.pid and blocker["held_position"] == held.position
        assert blocker["state"] == "idle in transaction" and blocker["held_for_seconds"] >= 0
        status = operator.get("/v1/projections").json()
        assert [b["pid"] for b in status["log"]["blockers"]] == [held.pid]

        # Nothing past the held position is applied, so nothing can be skipped over.
        for projection in status["projections"]:
            for partition in projection["partitions"]:
                assert partition["checkpoint"] < held.position, partition
        waited = clients["reader"].get(f"/v1/documents/{doc}", params={"min_position": position})
        problem = assert_problem(waited, 503, "projection_behind", "min_position")
        assert waited.headers["retry-after"] and problem["projected_position"] < position
        assert problem["log_held_back_since"] == blocker["xact_start"] and "held back" in problem["detail"]
        assert_problem(clients["reader"].get(f"/v1/documents/{doc}"), 404)  # not projected yet

        # The hold is visible: the lag, measured to the head, grows while the log is frozen ...
        events, lag_seconds = _lag(status)
        assert status["log"]["head"] >= position > status["log"]["safe_position"] and events >= 1, status
        time.sleep(HELD_LIMIT + 0.2)
        status = operator.get("/v1/projections").json()
        assert _lag(status)[0] >= events and _lag(status)[1] > lag_seconds + HELD_LIMIT / 2, status
        # ... GET /v1/events says since when, and where the safe position and the head are ...
        listed = clients["auditor"].get("/v1/events", params={"limit": 1})
        since = datetime.fromisoformat(listed.headers["x-chronicle-log-held-back"])
        assert since.isoformat() == status["log"]["held_back_since"] == blocker["xact_start"]
        assert int(listed.headers["x-chronicle-safe-position"]) == held.position - 1
        assert int(listed.headers["x-chronicle-log-head"]) >= position
        # ... and readiness degrades, saying why.
        not_ready = assert_problem(clients["anonymous"].get("/readyz"), 503, "not_ready")
        assert "held back" in not_ready["detail"] and not not_ready["checks"]["log"]["ok"], not_ready
        assert not_ready["checks"]["log"]["held_back_seconds"] > HELD_LIMIT

        assert held.release()
        got = clients["reader"].get(f"/v1/documents/{doc}", params={"min_position": position})
        assert got.status_code == 200 and got.json()["title"] == "during", got.text
        assert operator.get("/v1/log/blockers").json()["blockers"] == []
        assert clients["anonymous"].get("/readyz").status_code == 200
        assert "x-chronicle-log-held-back" not in clients["auditor"].get("/v1/events").headers
        status = wait_projected(operator)
        for projection in status["projections"]:
            for partition in projection["partitions"]:
                assert partition["checkpoint"] >= position or partition["lag_events"] == 0, partition
        # The held event itself is in the log, at the position it was given.
        events = clients["auditor"].get("/v1/events", params={"stream_type": "operator", "limit": 200}).json()
        assert held.position in [e["position"] for e in events["events"]]
    finally:
        held.release()
        pool.close()
        for client in clients.values():
            client.close()
        server.stop()
