"""Property-based API tests: schemathesis generates requests from /openapi.json of a real
server process and sends them with valid keys. No response may be a 5xx, and every response
must conform to the published schema (body, content type, documented headers).

Bounded: a few examples per operation and a time budget for the whole run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from tests.reliability.conftest import create_keys, start_api  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("CHRONICLE_SCHEMATHESIS_EXAMPLES", "12"))
BUDGET_SECONDS = float(os.environ.get("CHRONICLE_SCHEMATHESIS_SECONDS", "70"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]


@pytest.mark.soak
@pytest.mark.timeout(240)
def test_generated_requests_get_no_5xx_and_conform_to_the_schema(rel_database_url: str, tmp_path: Path) -> None:
    tokens = create_keys(rel_database_url, ("admin", "writer"))
    base, server = start_api(rel_database_url, tmp_path)
    failures: list[str] = []
    calls = 0
    try:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 30, "the schema publishes every route"
        deadline = time.monotonic() + BUDGET_SECONDS
        for operation in operations:
            # Writes with the writer key, everything else (operators', auditors', keys) with admin.
            role = "writer" if operation.method.upper() in ("POST", "PUT", "PATCH", "DELETE") and any(
                operation.path.startswith(p) for p in ("/v1/documents", "/v1/agents", "/v1/chains")) else "admin"
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            seen: set[str] = set()

            @given(case=operation.as_strategy())
            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                nonlocal calls
                if time.monotonic() > deadline:
                    return
                calls += 1
                response = case.call(base_url=base, headers=headers, timeout=30)
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every failure
                    text = f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}"
                    key = text.splitlines()[0] + str(response.status_code)
                    if key not in seen:
                        seen.add(key)
                        failures.append(text)

            run()
            if time.monotonic() > deadline:
                break
        if server.alive is False:
            failures.append(f"the server died:\n{server.tail()}")
    finally:
        server.stop()
    print(f"schemathesis {schemathesis.__version__}: {calls} requests over {len(operations)} operations")
    assert calls > 0
    assert not failures, "\n\n".join(failures[:30])
