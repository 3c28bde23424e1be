"""`chronicle demo` run as a subprocess against a real `chronicle up` process.

The workspace it builds is then checked through the API with another key (an auditor):
the chain and its edges, the staging-then-production tag history, the undo and redo in
the log, and the audit trail naming the demo key's actor. Its failures are sentences,
never tracebacks.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import chronicle_env, free_port, running_chronicle
from tests.cli.conftest import CHRONICLE, ROOT


@pytest.fixture(scope="module")
def demo_server(cli_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `chronicle up` process (API and in-process workers) on the module's database."""
    port = free_port()
    log = tmp_path_factory.mktemp("demo-server") / "server.log"
    env = chronicle_env(DATABASE_URL=cli_database_url, CHRONICLE_DATA_DIR=str(tmp_path_factory.mktemp("data")))
    with running_chronicle(env, log, port) as base:
        yield base


@pytest.fixture(scope="module")
def keys(cli_database_url: str) -> dict[str, str]:
    """An admin key for the demo (actor demo-admin) and an auditor key to check its work."""
    from service_layer.keys import create_key
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    pool = create_pool(cli_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2),
                       name="demo-tests")
    try:
        return {
            "admin": create_key(pool, "demo-admin", "admin", actor_id="demo-admin", actor_type="user")[1],
            "writer": create_key(pool, "demo-writer", "writer", actor_id="demo-writer")[1],
            "auditor": create_key(pool, "demo-auditor", "auditor", actor_id="demo-auditor")[1],
        }
    finally:
        pool.close()


def run_demo(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    environment = chronicle_env(COLUMNS="200", **env)
    environment.pop("CHRONICLE_KEY", None)
    environment.pop("CHRONICLE_URL", None)
    return subprocess.run([CHRONICLE, "demo", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=environment)


def test_demo_builds_the_workspace_through_the_api(demo_server: str, keys: dict[str, str]):
    result = run_demo("--url", demo_server, "--key", keys["admin"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    story = result.stderr  # with --json the story goes to stderr and stdout holds only the JSON
    for heading in ("A chain of documents and agents", "tagged staging, then production", "An undo and a redo",
                    "as of an earlier time", "The audit trail"):
        assert heading in story, story
    built = json.loads(result.stdout)
    session = built["session_id"]
    auditor = httpx.Client(base_url=demo_server, headers={"Authorization": f"Bearer {keys['auditor']}"}, timeout=30)

    # A chain of two documents and two agents, joined by three edges.
    chain = auditor.get(f"/v1/chains/{built['chain_id']}").json()
    assert chain["name"] == "Release pipeline"
    kinds = {node_id: node["kind"] for node_id, node in chain["nodes"].items()}
    assert sorted(kinds.values()) == ["agent", "agent", "document", "document"]
    refs = {node["ref_id"] for node in chain["nodes"].values()}
    assert refs == set(built["documents"]) | set(built["agents"])
    edges = {(e["source_id"], e["target_id"], e["type"]) for e in chain["edges"]}
    assert edges == {("brief", "planner", "input"), ("planner", "notes", "writes"), ("notes", "reviewer", "reviewed_by")}
    for agent in built["agents"]:
        assert auditor.get(f"/v1/agents/{agent}").status_code == 200

    # The release notes: tagged staging, then production, both at version 2.
    notes = built["documents"][1]
    tags = auditor.get(f"/v1/documents/{notes}/tags").json()
    assert [(m["tag"], m["operation"], m["document_version"]) for m in tags["history"]] == [
        ("staging", "tagged", 2), ("production", "tagged", 2)]
    production = auditor.get("/v1/documents", params={"tag": "production", "namespace": "demo"}).json()["documents"]
    assert [(d["document_version"], d["title"]) for d in production if d["document_id"] == notes] == [(2, "Release notes")]

    # The log: every command of the session, by the demo key's actor; the retried create once.
    events = auditor.get("/v1/events", params={"session": session, "limit": 200}).json()["events"]
    types = [e["type"] for e in events]
    assert types.count("agent.created") == 2 and types.count("document.created") == 2
    assert types.count("edge.created") == 3 and types.count("chain.node_added") == 4
    notes_types = [e["type"] for e in events if e["stream_id"] == notes]
    assert notes_types == ["document.created", "document.updated", "document.tagged", "document.tagged",
                           "document.updated", "document.undone", "document.redone"]
    assert {(e["metadata"]["actor_id"], e["metadata"]["actor_type"]) for e in events} == {("demo-admin", "user")}
    assert built["events"] == len(events)

    # Time travel: as of the staging tag, production was not yet tagged.
    then = auditor.get(f"/v1/documents/{notes}/history", params={"as_of": built["as_of"]}).json()
    assert then["state"]["tags"] == {"staging": 2} and then["state"]["version"] == 2
    now = auditor.get(f"/v1/documents/{notes}").json()
    assert now["document_version"] == 3 and now["tags"] == {"production": 2, "staging": 2}
    # A content-only update keeps the title and metadata on the read side too.
    assert now["title"] == "Release notes" and now["metadata"] == {"demo": now["metadata"]["demo"]}
    auditor.close()


def test_demo_with_a_writer_key_builds_everything_but_the_audit_trail(demo_server: str, keys: dict[str, str]):
    result = run_demo("--url", demo_server, "--key", keys["writer"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "auditor or admin role" in result.stdout and "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("case", ["no key", "refused key", "auditor key", "unreachable", "not a url"])
def test_demo_failures_are_explained_without_a_traceback(demo_server: str, keys: dict[str, str], case: str):
    if case == "no key":
        result, expected, code = run_demo("--url", demo_server), "No API key", 2
    elif case == "refused key":
        result, expected, code = run_demo("--url", demo_server, "--key", "chr_nosuchkey_xyz"), "refused the API key", 1
    elif case == "auditor key":  # it reads, and may not write
        result, expected, code = run_demo("--url", demo_server, "--key", keys["auditor"]), "may not POST", 1
    elif case == "unreachable":
        result, expected, code = run_demo("--url", f"http://127.0.0.1:{free_port()}", "--key", keys["admin"]), \
            "Cannot reach Chronicle", 1
    else:
        result, expected, code = run_demo("--url", "localhost:8000", "--key", keys["admin"]), "--url must be", 2
    assert result.returncode == code, result.stdout + result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
