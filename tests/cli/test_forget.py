"""`chronicle forget SUBJECT`: the subject's fields read as erased in `chronicle history`."""

from __future__ import annotations

import json

from domain import commands as c
from service_layer.workspace import Workspace


def test_forget_erases_a_subjects_fields_and_records_it(chronicle, cli_database_url):
    app = Workspace({"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": cli_database_url})
    try:
        made = app.handle(c.CreateDocument(namespace="cli", document_type="user_feedback", title="Feedback",
                                           content="carol says the canvas is slow"),
                          c.CommandContext(actor_id="svc", actor_type="service", subject_id="carol"))
        kept = app.handle(c.CreateDocument(namespace="cli", document_type="user_feedback", title="Feedback",
                                           content="dave likes the canvas"),
                          c.CommandContext(actor_id="svc", actor_type="service", subject_id="dave"))
    finally:
        app.close()
    assert "carol says" in chronicle("history", made.stream_id, "--json").stdout

    done = json.loads(chronicle("forget", "carol", "--no-wait", "--json").stdout)
    assert done["key_destroyed"] is True and done["streams"] == [made.stream_id]
    assert "documents" in done["rebuilds"]  # queued for a worker (none runs here)
    history = json.loads(chronicle("history", made.stream_id, "--json").stdout)
    assert history[0]["payload"]["content"] == "[erased]"
    assert "dave likes" in chronicle("history", kept.stream_id, "--json").stdout
    operator = json.loads(chronicle("history", "operator", "--json").stdout)
    forgotten = [e for e in operator if e["type"] == "subject.forgotten"]
    assert forgotten[-1]["payload"]["target"] == "subject:carol"
    assert forgotten[-1]["metadata"]["actor_id"] == "cli-tester"
    again = json.loads(chronicle("forget", "carol", "--no-wait", "--json").stdout)
    assert again["key_destroyed"] is False
