"""`chronicle groups seek`: an operator moves a consumer group's checkpoints, recorded as
`operator.group_moved`; an unknown group or a position past the safe position is refused."""

from __future__ import annotations

import json
import uuid

from infrastructure.config import Settings
from infrastructure.db import create_pool
from service_layer.groups import join


def _checkpoints(pool, group: str) -> list[int]:
    with pool.connection() as conn:
        return [r["position"] for r in conn.execute(
            "SELECT position FROM consumer_group_checkpoint WHERE group_name = %s ORDER BY partition",
            (group,)).fetchall()]


def test_seek_moves_a_groups_checkpoints_and_refuses_what_it_cannot(chronicle, cli_database_url):
    group = f"cli-{uuid.uuid4().hex[:8]}"
    pool = create_pool(cli_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1))
    try:
        join(pool, group, "reader", 60, "test-key", 2)
        with pool.connection() as conn:
            safe = conn.execute("SELECT safe_position() AS safe").fetchone()["safe"]

        moved = json.loads(chronicle("groups", "seek", group, "--to", str(safe), "--json").stdout)
        assert moved["group"] == group and moved["position"] == safe
        assert _checkpoints(pool, group) == [safe, safe]
        operator = json.loads(chronicle("history", "operator", "--json").stdout)
        recorded = [e for e in operator if e["type"] == "operator.group_moved"]
        assert recorded[-1]["payload"]["target"] == f"group:{group}"
        assert recorded[-1]["metadata"]["actor_id"] == "cli-tester"

        past = chronicle("groups", "seek", group, "--to", str(safe + 1000), check=False)
        assert past.returncode == 1 and "past the log's safe position" in past.stderr
        unknown = chronicle("groups", "seek", "no-such-group", "--to", "0", check=False)
        assert unknown.returncode == 1 and "no consumer group 'no-such-group'" in unknown.stderr
        assert _checkpoints(pool, group) == [safe, safe]  # the refusals wrote nothing
    finally:
        pool.close()
