"""`chronicle projections verify [NAME]`: exit 0 on an exact read model, 1 with the differing rows."""

from __future__ import annotations

import json

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from tests.projections.conftest import REGISTRY, project_all
from tests.projections.history import History, append_history


def test_projections_verify(chronicle, cli_database_url):
    settings = Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2)
    pool = create_pool(cli_database_url, settings)
    try:
        append_history(EventStore(pool, REGISTRY, settings), History(3), [(i, i * 5, i) for i in range(30)])
        project_all(pool)
        clean = chronicle("projections", "verify")
        assert clean.stdout == "" and "documents: 0 differing rows" in clean.stderr
        assert "agents: 0 differing rows" in clean.stderr and "chains: 0 differing rows" in clean.stderr
        report = json.loads(chronicle("projections", "verify", "documents", "--json").stdout)
        assert report["projection"] == "documents" and report["differing_rows"] == 0
        with pool.connection() as conn:
            doc = conn.execute("UPDATE document SET title = 'tampered' WHERE document_id ="
                               " (SELECT min(document_id) FROM document) RETURNING document_id"
                               ).fetchone()["document_id"]
    finally:
        pool.close()
    found = chronicle("projections", "verify", "documents", check=False)
    assert found.returncode == 1, found.stderr
    assert doc in found.stdout and "changed" in found.stdout and "title" in found.stdout
    assert "documents: 1 differing rows" in found.stderr
    every = chronicle("projections", "verify", "--json", check=False)
    assert every.returncode == 1
    reports = {r["projection"]: r for r in json.loads(every.stdout)}
    assert set(reports) == {"documents", "chains", "agents"}
    assert reports["documents"]["differences"] == [{"table": "document", "key": {"document_id": doc},
                                                    "kind": "changed", "columns": ["title"], "stream_id": doc}]
    assert reports["chains"]["differing_rows"] == reports["agents"]["differing_rows"] == 0
    unknown = chronicle("projections", "verify", "nope", check=False)
    assert unknown.returncode == 2 and "no projection" in unknown.stderr
    types = [e["type"] for e in json.loads(chronicle("history", "operator", "--json").stdout)]
    assert types.count("operator.projection_verified") == 8
