"""Several server processes share the clients' keep-alive connections: now and then a response asks
its client to reconnect (`Connection: close`), so connections drift to the process least busy."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import infrastructure.logs
from api.app import create_app, create_app_from_env, process_settings
from api.connections import KEEP_ALIVE_REQUESTS, SpreadConnectionsMiddleware
from infrastructure.config import Settings, get_settings
from infrastructure.event_store import EventStore


def _closing(paths: list[str], **options: int) -> list[bool]:
    """Whether each response (one per path) says `Connection: close`, once."""
    app = Starlette(routes=[
        Route("/", lambda request: PlainTextResponse("ok")),
        Route("/closing", lambda request: PlainTextResponse("ok", headers={"Connection": "close"})),
    ])
    app.add_middleware(SpreadConnectionsMiddleware, **options)

    async def send() -> list[bool]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [[v for k, v in (await client.get(path)).headers.multi_items() if k == "connection"] == ["close"]
                    for path in paths]

    return asyncio.run(send())


def test_one_response_in_keep_alive_requests_closes_its_connection() -> None:
    closed = sum(_closing(["/"] * 2000))
    # 2000 / KEEP_ALIVE_REQUESTS = 40 expected; the bounds are more than five standard deviations out.
    assert KEEP_ALIVE_REQUESTS == 50 and 8 <= closed <= 80


def test_a_closing_response_says_so_once() -> None:
    assert _closing(["/", "/closing"], keep_alive_requests=1) == [True, True]


def test_only_the_processes_that_share_connections_spread_them() -> None:
    def spreads(app) -> bool:
        return any(m.cls is SpreadConnectionsMiddleware for m in app.user_middleware)

    url = "postgresql://127.0.0.1:5432/unused"  # the app connects only when it starts
    assert spreads(create_app(url, spread=True)) and not spreads(create_app(url))


@pytest.mark.parametrize("processes, spread", [(None, False), ("1", False), ("0", False), ("3", True)])
def test_the_server_factory_spreads_only_among_several_processes(monkeypatch, processes, spread) -> None:
    """`uvicorn --factory api.app:create_app_from_env` on one process never asks a client to reconnect;
    `chronicle serve` on several (which sets CHRONICLE_API_PROCESSES to their count) does."""
    monkeypatch.setattr(infrastructure.logs, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1:5432/unused")
    if processes is None:
        monkeypatch.delenv("CHRONICLE_API_PROCESSES", raising=False)
    else:
        monkeypatch.setenv("CHRONICLE_API_PROCESSES", processes)
    get_settings.cache_clear()
    try:
        app = create_app_from_env()
    finally:
        get_settings.cache_clear()
    assert any(m.cls is SpreadConnectionsMiddleware for m in app.user_middleware) is spread


@pytest.mark.parametrize("processes, groups, expected", [(1, None, 2), (2, None, 1), (3, None, 1), (2, "4", 4)])
def test_several_server_processes_share_out_the_append_groups(monkeypatch, processes, groups, expected) -> None:
    """Each process writes its own groups of appends: among several, the default is shared out
    (at least one each), so the server's groups in flight do not grow with its processes; a
    CHRONICLE_APPEND_GROUPS that is set stays each process's own."""
    if groups is None:
        monkeypatch.delenv("CHRONICLE_APPEND_GROUPS", raising=False)
    else:
        monkeypatch.setenv("CHRONICLE_APPEND_GROUPS", groups)
    settings = Settings()
    assert process_settings(settings, processes).chronicle_append_groups == expected
    store = EventStore(None, settings=process_settings(settings, processes))  # type: ignore[arg-type] - never connects
    assert store.groups is not None and store.groups.max_leaders == expected
