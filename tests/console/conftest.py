"""Fixtures for the console tests: a real `chronicle up` process, keys for every role, seeded
events (a session, a causation chain, a document with versions and tags, an HTML payload), and
headless Chromium from Debian's packages driven by Playwright (no browser download).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import httpx
import pytest

# The API tests' fixtures, each made anew for this package: a database, a server on it, keys.
from tests.api.conftest import ROOT, api_database_url, api_pool, server, tokens  # noqa: F401

CHROMIUM = os.environ.get("CHRONICLE_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "docs" / "console"
XSS = "<script>window.__pwned = 1</script><b>bold</b>"


@pytest.fixture(scope="package")
def console_server(server: str) -> str:
    """The base URL of a `chronicle up` process (API, console and in-process workers)."""
    return server


@pytest.fixture(scope="package")
def console_pool(api_pool):
    """A pool on the server's database."""
    return api_pool


@pytest.fixture(scope="package")
def role_tokens(tokens: dict[str, str]) -> dict[str, str]:
    """A live key for every role, by role name."""
    return tokens


@pytest.fixture(scope="package")
def seeded(console_server: str, role_tokens: dict[str, str]) -> dict[str, str]:
    """Events to look at: a document created, changed, tagged, undone and redone in one session,
    a document whose payload holds HTML, and an event caused by another."""
    session = f"session-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=console_server, timeout=30,
                      headers={"Authorization": f"Bearer {role_tokens['writer']}", "X-Session-Id": session}) as w:
        made = w.post("/v1/documents", json={"namespace": "handbook", "type": "guide", "title": "Onboarding",
                                             "content": "first draft"}).json()
        doc = made["stream_id"]
        w.patch(f"/v1/documents/{doc}", json={"content": "second draft", "title": "Onboarding v2"})
        w.put(f"/v1/documents/{doc}/tags/production", json={"version": 1})
        w.put(f"/v1/documents/{doc}/tags/staging", json={"version": 2})
        w.post(f"/v1/documents/{doc}/undo")
        w.post(f"/v1/documents/{doc}/redo")
        html = w.post("/v1/documents", json={"namespace": "handbook", "type": "guide", "title": XSS,
                                             "content": XSS}).json()
    with httpx.Client(base_url=console_server, timeout=30,
                      headers={"Authorization": f"Bearer {role_tokens['auditor']}"}) as a:
        events = a.get("/v1/events", params={"stream": doc, "min_position": html["position"]}).json()["events"]
    root = events[0]["event_id"]
    with httpx.Client(base_url=console_server, timeout=30,
                      headers={"Authorization": f"Bearer {role_tokens['writer']}", "X-Session-Id": session,
                               "X-Causation-Id": root}) as w:
        caused = w.post("/v1/documents", json={"namespace": "handbook", "type": "note", "title": "Follow-up",
                                               "content": "caused by the first"}).json()
    return {"session": session, "document": doc, "html_document": html["stream_id"], "root_event": root,
            "caused_stream": caused["stream_id"], "position": str(caused["position"])}


def sign_in(page, base: str, token: str, path: str = "/console/") -> None:
    """Sign in through the form, as a person would."""
    page.goto(f"{base}{path}")
    page.fill("input[name=api_key]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def shoot(page, name: str) -> None:
    """Keep a screenshot of the page under docs/console/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="package")
def browser():
    """Headless Chromium from Debian's packages."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def csrf_of(html: str) -> str:
    """The CSRF token in a page's first form."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
