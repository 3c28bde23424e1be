"""`chronicle keys revoke` on a revoked key or given a token, and empty lists, run as subprocesses."""

from __future__ import annotations

import json


def test_empty_lists_say_none(chronicle):
    keys = chronicle("keys", "list")
    assert keys.stdout.startswith("none") and "┃" not in keys.stdout, keys.stdout
    assert json.loads(chronicle("keys", "list", "--json").stdout) == []
    letters = chronicle("dead-letters", "list")
    assert letters.stdout.startswith("none: no parked dead letters") and "┃" not in letters.stdout, letters.stdout
    skipped = chronicle("dead-letters", "list", "--status", "skipped", "--projection", "documents")
    assert "none: no skipped dead letters for documents" in skipped.stdout


def test_revoke_twice_says_already_revoked(chronicle):
    key = json.loads(chronicle("keys", "create", "twice", "--role", "reader", "--json").stdout)
    first = chronicle("keys", "revoke", key["key_id"])
    assert f"revoked {key['key_id']} (twice)" in first.stdout
    second = chronicle("keys", "revoke", key["key_id"], check=False)
    assert second.returncode == 1, second
    assert "already revoked" in second.stderr and key["key_id"] in second.stderr
    assert "revoked" not in second.stdout
    history = json.loads(chronicle("history", "operator", "--json").stdout)
    revocations = [e for e in history
                   if e["type"] == "operator.key_revoked" and e["payload"]["target"] == f"key:{key['key_id']}"]
    assert len(revocations) == 1, revocations  # the second try records nothing


def test_revoke_given_a_token_names_the_key_id_and_revokes_nothing(chronicle):
    key = json.loads(chronicle("keys", "create", "tokened", "--role", "reader", "--json").stdout)
    refused = chronicle("keys", "revoke", key["token"], check=False)
    assert refused.returncode == 2, refused
    assert "give the key id (see `chronicle keys list`), not the token" in refused.stderr
    assert f"key id is {key['key_id']}" in refused.stderr
    assert key["token"] not in refused.stderr + refused.stdout  # the secret is not echoed back
    listed = {k["key_id"]: k for k in json.loads(chronicle("keys", "list", "--json").stdout)}
    assert listed[key["key_id"]]["revoked_at"] is None
    missing = chronicle("keys", "revoke", "nosuchkey", check=False)
    assert missing.returncode == 1 and "no key 'nosuchkey'" in missing.stderr and "keys list" in missing.stderr
