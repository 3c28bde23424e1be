"""The console in a real browser (Debian's headless Chromium): what operators and auditors do.

Each test keeps screenshots of the pages it visits under docs/console/.
"""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.console.conftest import XSS, shoot, sign_in


def test_operator_rebuilds_and_retries_a_dead_letter(page, console_server, role_tokens, seeded, console_pool):
    sign_in(page, console_server, role_tokens["operator"])
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("#log-head")).not_to_have_text("0")
    # htmx polls the live part; each poll adds a lag sample to the chart.
    expect(page.locator("#lag-samples")).not_to_have_text("1", timeout=10_000)
    shoot(page, "overview")

    page.click("a[href='/console/projections']")
    page.click("#rebuild-documents")
    job = page.locator("#documents-rebuild")
    # htmx polls the progress until the worker finishes the job.
    expect(job.locator(".job-state")).to_have_text("done", timeout=60_000)
    expect(job.locator(".percent")).to_have_text("100%")
    expect(job.locator("progress")).to_have_attribute("value", "100")
    shoot(page, "projections")

    with console_pool.connection() as conn:
        event = conn.execute("SELECT position, event_id, stream_id, type FROM events WHERE stream_id = %s"
                             " ORDER BY version DESC LIMIT 1", (seeded["caused_stream"],)).fetchone()
        dead_id = conn.execute(
            "INSERT INTO dead_letter (projection, partition, position, event_id, stream_id, type, error, attempts)"
            " VALUES ('documents', 0, %s, %s, %s, %s, 'KeyError: title (a parked event)', 3) RETURNING id",
            (event["position"], event["event_id"], event["stream_id"], event["type"])).fetchone()["id"]
    page.click("a[href='/console/dead-letters']")
    letter = page.locator(f"#dead-letter-{dead_id}")
    expect(letter.locator("pre.error")).to_contain_text("KeyError: title")
    letter.locator("summary").click()
    expect(letter.locator("tr.parked")).to_have_count(1)
    shoot(page, "dead-letters")
    letter.locator("button.retry").click()
    expect(page.locator("#outcome")).to_contain_text(f"Streams resumed: {seeded['caused_stream']}")
    with httpx.Client(base_url=console_server, headers={"Authorization": f"Bearer {role_tokens['auditor']}"}) as a:
        retried = a.get("/v1/events", params={"type": "operator.dead_letter_retried"}).json()["events"]
    assert [e["payload"]["target"] for e in retried] == [f"dead_letter:{dead_id}"]
    assert retried[0]["metadata"]["actor_id"] == "svc-operator"
    page.goto(f"{console_server}/console/dead-letters")
    expect(page.locator("#no-dead-letters")).to_be_visible()


def test_auditor_follows_a_session_to_a_diff(page, console_server, role_tokens, seeded):
    sign_in(page, console_server, role_tokens["auditor"])
    expect(page.locator("h1")).to_have_text("Event log")
    page.fill("input[name=session]", seeded["session"])
    page.click("form.filters button[type=submit]")
    rows = page.locator("#events tr:has(td)")
    expect(rows.first).to_contain_text("document.created")
    assert all(seeded["session"] in row.inner_text() for row in rows.all())
    shoot(page, "event-log")

    # The session's first event is the root: its effect (the follow-up, caused by it) is in its tree.
    rows.first.locator("td:nth-child(3) a").click()
    expect(page).to_have_url(f"{console_server}/console/events/{seeded['root_event']}")
    expect(page.locator("#payload")).to_contain_text("first draft")
    effect = page.locator("#causation li.effect a")
    expect(effect).to_have_count(1)
    effect.click()
    expect(page.locator("#causation li.cause a")).to_have_attribute("href", f"/console/events/{seeded['root_event']}")
    shoot(page, "event")
    page.click("#causation li.cause a")
    page.click("#stream-link")
    expect(page.locator("h1")).to_contain_text(seeded["document"])
    expect(page.locator(".timeline li.undo .tag")).to_have_text("undo")
    expect(page.locator(".timeline li.redo .tag")).to_have_text("redo")
    expect(page.locator("#tag-history")).to_contain_text("production")
    page.fill("#diff-form input[name=from]", "1")
    page.fill("#diff-form input[name=to]", "2")
    page.click("#diff-form button")
    expect(page.locator("#diff")).to_contain_text("second draft")
    page.locator(".timeline a.travel").first.click()
    expect(page.locator("#state")).to_contain_text("first draft")
    expect(page.locator("#diff")).to_contain_text("second draft")
    shoot(page, "stream")
    page.goto(f"{console_server}/console/documents?tag=production")
    expect(page.locator("#documents")).to_contain_text("Onboarding")
    shoot(page, "documents")


def test_reader_gets_403_on_operator_pages(page, console_server, role_tokens):
    sign_in(page, console_server, role_tokens["reader"])
    expect(page.locator("h1")).to_have_text("Documents")
    for path in ("/console/", "/console/projections", "/console/dead-letters", "/console/keys", "/console/events"):
        response = page.goto(f"{console_server}{path}")
        assert response.status == 403, path
        expect(page.locator("#error-detail")).to_contain_text("a reader key may not do this")
    shoot(page, "forbidden")


def test_a_form_without_its_csrf_token_is_refused(page, console_server, role_tokens):
    sign_in(page, console_server, role_tokens["operator"])
    page.goto(f"{console_server}/console/projections")
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    with page.expect_navigation():
        page.click("#verify-documents")
    expect(page.locator("h1")).to_contain_text("Form refused")
    page.goto(f"{console_server}/console/projections")
    page.click("#verify-documents")
    expect(page.locator("#verify-result")).to_contain_text("matches a rebuild")


def test_html_in_a_payload_renders_as_text(page, console_server, role_tokens, seeded):
    sign_in(page, console_server, role_tokens["auditor"])
    page.goto(f"{console_server}/console/events?stream={seeded['html_document']}")
    page.locator("#events tr:has(td) a").first.click()
    expect(page.locator("#payload")).to_contain_text(XSS)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#payload b").count() == 0


def test_an_expired_session_shows_the_sign_in_page(page, console_server, role_tokens, console_pool):
    sign_in(page, console_server, role_tokens["admin"])
    expect(page.locator("h1")).to_have_text("Overview")
    page.goto(f"{console_server}/console/keys")
    shoot(page, "keys")
    page.goto(f"{console_server}/console/integrity")
    shoot(page, "integrity")
    with console_pool.connection() as conn:
        conn.execute("UPDATE console_session SET expires_at = now() - interval '1 second'")
    response = page.goto(f"{console_server}/console/projections")
    assert response.status == 401
    expect(page.locator("#sign-in-message")).to_contain_text("expired")
    shoot(page, "sign-in")
    page.fill("input[name=api_key]", role_tokens["admin"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Projections")
