"""Fixtures for the client tests: the API tests' `chronicle up` server and its keys, for this package too."""

from tests.api.conftest import api_database_url, api_pool, server, tokens  # noqa: F401 - fixtures
