"""run_blocking: a route's blocking function runs in a route thread with the request's context
variables, and a cancelled request still waits for it to end."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from api.route_threads import run_blocking

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_the_callers_context_variables_reach_the_thread() -> None:
    def seen(suffix: str) -> tuple[str, str]:
        return request_id.get() + suffix, threading.current_thread().name

    async def request() -> tuple[str, str]:
        request_id.set("r-42")
        return await run_blocking(seen, suffix="!")

    value, thread = asyncio.run(request())
    assert value == "r-42!" and thread.startswith("chronicle-route")


def test_a_thread_does_not_set_the_callers_context() -> None:
    def change(value: str) -> None:
        request_id.set(value)

    async def request() -> str:
        request_id.set("r-1")
        await run_blocking(change, value="changed")
        return request_id.get()

    assert asyncio.run(request()) == "r-1"


def test_a_cancelled_request_waits_for_its_blocking_function_to_end() -> None:
    started, finished = threading.Event(), threading.Event()

    def command() -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    async def request() -> None:
        task = asyncio.create_task(run_blocking(command))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancellation reached the caller only once the command had ended.
        assert finished.is_set()

    asyncio.run(request())
