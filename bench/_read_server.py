"""The read bench's server: Chronicle's API and, in the same process, a bare route beside it.

The bare route runs only the primary-key SELECT of `GET /v1/documents/{id}`, on the same pool,
as a plain FastAPI route with no API key and no middleware. It exists only here, for the bench:

    .venv/bin/python bench/_read_server.py DATABASE_URL PORT
"""

from __future__ import annotations

import sys
from typing import Any

import _db  # noqa: F401 - sets sys.path
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app import create_app
from service_layer.read_queries import DOC_COLUMNS
from cli.commands import server_options
from infrastructure.config import get_settings
from infrastructure.logs import configure_logging

BARE_PREFIX = "/bare/"


def build(url: str) -> ASGIApp:
    """Chronicle's app, with requests under /bare/ sent to a bare app that shares its pool."""
    app = create_app(url, broker="absent", serving=True)
    bare = FastAPI()

    @bare.get("/bare/documents/{document_id}")
    def bare_document(document_id: str) -> Any:
        with app.state.chronicle.pool.connection() as conn:
            return conn.execute(f"SELECT {DOC_COLUMNS} FROM document d WHERE d.document_id = %s",
                                (document_id,)).fetchone()

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(BARE_PREFIX):
            await bare(scope, receive, send)
        else:
            await app(scope, receive, send)  # and the lifespan: it opens the pool both use

    return dispatch


if __name__ == "__main__":
    configure_logging(get_settings(), replace=True)  # as `chronicle serve` logs
    uvicorn.Server(uvicorn.Config(build(sys.argv[1]), **server_options("127.0.0.1", int(sys.argv[2]),
                                                                       "warning"))).run()
