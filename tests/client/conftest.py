"""Fixtures for the client tests: the API tests' `chronicle up` server and its keys, and a subscriber's key."""

import pytest

from tests.api.conftest import api_database_url, api_pool, server, tokens  # noqa: F401 - fixtures


@pytest.fixture(scope="package")
def subscriber_token(api_pool) -> str:  # noqa: F811 - the fixture imported above
    """A key of the role made for services that follow the log and join consumer groups."""
    from service_layer.keys import create_key

    return create_key(api_pool, "test-subscriber", "subscriber", actor_id="svc-subscriber")[1]
