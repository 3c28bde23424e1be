"""Blocking route handlers run in worker threads of their own: the hop from the event loop, made cheap.

A command's handler blocks on PostgreSQL, so it runs in a thread. anyio's to_thread (what FastAPI
uses for plain handlers) costs the event loop a capacity limiter, a cancel scope and run-var
look-ups per call; asyncio's executor hop does the same work for about half of that.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
# As many threads as anyio's default limiter lends: a handler may wait seconds (?min_position=).
ROUTE_THREADS = 40
_executor: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(ROUTE_THREADS, thread_name_prefix="chronicle-route")
    return _executor


async def run_blocking(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """`fn(**kwargs)` in a route thread, with the caller's context variables (its log ids).

    As with anyio's to_thread, a cancelled caller still waits for the call to end, so a command
    never runs on unobserved after its request has gone.
    """
    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(_threads(), functools.partial(context.run, fn, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
