"""Bounds at the door, over HTTP: for every stored field of every command, values just inside
its bound are accepted and land in their snapshot row (projected by the server's workers);
values just outside are refused with a 422 problem naming the field, and nothing is appended.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.rows import dict_row

from domain.bounds import MAX_CONTEXT_ID_CHARS
from tests.api.conftest import assert_problem
from tests.bounds_cases import CASES, EXAMPLES, HUGE, INSIDE, Case, Streams, inside_value, request, values



@pytest.fixture(scope="module")
def db(api_database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(api_database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture(scope="module")
def streams(clients) -> Streams:
    """A chain with nodes a, b and edge e; a text document and a body document; an agent."""
    writer = clients["writer"]

    def made(response) -> str:
        assert response.status_code in (200, 201), response.text
        return response.json()["stream_id"]

    doc = made(writer.post("/v1/documents", json={"namespace": "bounds", "type": "t", "title": "T", "content": "c"}))
    body_doc = made(writer.post("/v1/documents", json={"namespace": "bounds", "type": "t", "title": "B", "body": {}}))
    agent = made(writer.post("/v1/agents", json={"name": "a", "prompt": "p", "model": "m"}))
    chain = made(writer.post("/v1/chains", json={"name": "c"}))
    for node in ("a", "b"):
        made(writer.post(f"/v1/chains/{chain}/nodes", json={"node_id": node, "kind": "document", "ref_id": doc}))
    made(writer.post(f"/v1/chains/{chain}/edges", json={"edge_id": "e", "source_id": "a", "target_id": "b",
                                                        "type": "flows"}))
    return Streams(chain, doc, body_doc, agent, itertools.count())


def log_state(db: psycopg.Connection) -> dict[str, Any]:
    """How many events the log holds and its last position."""
    return db.execute("SELECT count(*) AS n, max(position) AS last FROM events").fetchone()


def stored(db: psycopg.Connection, sql: str, params: dict[str, Any], timeout: float = 20) -> Any:
    """The value `sql` reads once the projection has reached `params["position"]`."""
    deadline = time.monotonic() + timeout
    while True:
        row = db.execute(sql, params).fetchone()
        if row is not None:
            return row["v"]
        assert time.monotonic() < deadline, f"not projected: {sql} {params}"
        time.sleep(0.02)


SEEN: set[tuple[str, Any]] = set()


@pytest.mark.parametrize("case", INSIDE, ids=[k.id for k in INSIDE])
@EXAMPLES
@given(data=st.data())
def test_values_just_inside_a_bound_are_accepted_and_projected(clients, streams, db, case: Case, data) -> None:
    value = inside_value(data, case, SEEN)
    method, path, body, key, stream = request(streams, case, value)
    response = clients["writer"].request(method, path, json=body)
    if case.stored is None:  # a rule answers (the tagged version must exist), never the bound
        assert response.status_code != 422, response.text
        return
    assert response.status_code in (200, 201), response.text
    out = response.json()
    params = {"stream": stream or out["stream_id"], "key": key, "position": out["position"] or 0}
    assert stored(db, case.stored, params) == value


@pytest.mark.parametrize("case", CASES, ids=[k.id for k in CASES])
@EXAMPLES
@given(data=st.data())
def test_values_just_outside_a_bound_are_refused_naming_the_field(clients, streams, db, case: Case, data) -> None:
    value = data.draw(values(case, inside=False), label="value")
    method, path, body, _, _ = request(streams, case, value)
    before = log_state(db)
    response = clients["writer"].request(method, path, json=body)
    assert_problem(response, 422, field=case.field)
    assert log_state(db) == before, "a refused command appended"


def test_the_red_team_duration_is_refused_naming_duration_ms(clients, streams, db) -> None:
    """The exact input seen: a 320-digit duration_ms (it used to answer 201 and stall the projection)."""
    raw = b'{"execution_id": "red-team", "duration_ms": ' + str(HUGE).encode() + b', "tokens": 1}'
    assert len(str(HUGE)) == 320
    before = log_state(db)
    response = clients["writer"].post(f"/v1/agents/{streams.agent}/executions", content=raw,
                                      headers={"content-type": "application/json"})
    assert_problem(response, 422, "validation_error", "duration_ms")
    assert log_state(db) == before
    # The same run with a duration in range is recorded and projected.
    ok = clients["writer"].post(f"/v1/agents/{streams.agent}/executions",
                                json={"execution_id": "red-team", "duration_ms": 2**53 - 1, "tokens": 1})
    assert ok.status_code == 201, ok.text
    sql = ("SELECT duration_ms AS v FROM agent_execution WHERE agent_id = %(stream)s AND execution_id = 'red-team'"
           " AND last_position >= %(position)s")
    assert stored(db, sql, {"stream": streams.agent, "position": ok.json()["position"]}) == 2**53 - 1


@pytest.mark.parametrize("inside", [True, False])
def test_the_session_id_is_bounded_for_its_indexes(clients, db, inside: bool) -> None:
    session = "s" * (MAX_CONTEXT_ID_CHARS if inside else MAX_CONTEXT_ID_CHARS + 1)
    before = log_state(db)
    response = clients["writer"].post("/v1/documents", headers={"X-Session-Id": session},
                                      json={"namespace": "bounds", "type": "t", "title": "S", "content": "c"})
    if not inside:
        assert_problem(response, 422, "invalid_header", "X-Session-Id")
        assert log_state(db) == before
        return
    assert response.status_code == 201, response.text
    out = response.json()
    sql = "SELECT session_id AS v FROM document WHERE document_id = %(stream)s AND last_position >= %(position)s"
    assert stored(db, sql, {"stream": out["stream_id"], "position": out["position"]}) == session
