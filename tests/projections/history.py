"""Random workspace histories following the event contract, for hypothesis and the benches."""

from __future__ import annotations

import random
import uuid
from typing import Any

from infrastructure.event_store import ANY, EventStore, NewEvent

KINDS = ("chain", "document", "agent")


class History:
    """Turns (stream, op, arg) choices into valid events, tracking a minimal model."""

    def __init__(self, seed: int = 0) -> None:
        self.rnd = random.Random(seed)
        self.streams: list[tuple[str, str]] = []
        self.model: dict[str, dict[str, Any]] = {}

    def next_event(self, pick: int, op: int, arg: int) -> tuple[str, NewEvent]:
        if not self.streams or pick % 5 == 0:
            kind = KINDS[op % 3]
            sid = str(uuid.uuid4())
            self.streams.append((sid, kind))
            return sid, self._create(sid, kind, arg)
        sid, kind = self.streams[pick % len(self.streams)]
        return sid, getattr(self, f"_{kind}")(sid, self.model[sid], op, arg)

    def _create(self, sid: str, kind: str, arg: int) -> NewEvent:
        if kind == "chain":
            self.model[sid] = {"deleted": False, "nodes": [], "edges": [], "n": 0}
            return NewEvent("chain.created", {"name": f"c{arg}", "description": "d", "metadata": {"a": arg % 3}})
        if kind == "document":
            self.model[sid] = {"deleted": False, "version": 1, "tags": {}}
            return NewEvent("document.created", {
                "namespace": f"ns{arg % 2}", "document_type": "llm_interaction", "title": f"t{arg}",
                "content": f"body {arg % 7}", "body": None, "metadata": {"k": arg % 4}, "version": 1})
        self.model[sid] = {"deleted": False, "runs": 0}
        return NewEvent("agent.created", {"name": f"a{arg}", "prompt": "p", "model": "m", "tools": ["x"], "metadata": {}})

    def _chain(self, sid: str, m: dict, op: int, arg: int) -> NewEvent:
        if m["deleted"]:
            return NewEvent("chain.undone", {"undone_version": 1, "to_version": 1, "state": {
                "name": "back", "description": None, "metadata": {}, "canvas_state": None, "viewport": None,
                "nodes": {}, "edges": {}, "deleted": False}}) if op % 2 else NewEvent("chain.updated", {"name": "x"})
        choice = op % 8
        if choice == 0:
            m["n"] += 1
            node = f"n{m['n']}"
            m["nodes"].append(node)
            return NewEvent("chain.node_added", {"node_id": node, "kind": "document", "ref_id": "r", "position": {"x": arg}})
        if choice == 1 and len(m["nodes"]) >= 2:
            m["n"] += 1
            edge = f"e{m['n']}"
            m["edges"].append(edge)
            return NewEvent("edge.created", {"edge_id": edge, "source_id": m["nodes"][0], "target_id": m["nodes"][-1],
                                             "type": "flow", "metadata": {"w": arg}})
        if choice == 2 and m["edges"]:
            return NewEvent("edge.updated", {"edge_id": m["edges"][arg % len(m["edges"])], "metadata": {"w": arg}})
        if choice == 3 and m["edges"]:
            return NewEvent("edge.deleted", {"edge_id": m["edges"].pop(arg % len(m["edges"]))})
        if choice == 4:
            return NewEvent("chain.canvas_updated", {"canvas_state": {"z": arg}, "viewport": {"x": 0, "y": arg}})
        if choice == 5:
            m["deleted"] = True
            return NewEvent("chain.deleted", {"reason": "r"})
        if choice == 6:
            m["edges"] = m["edges"][:1]
            return NewEvent("chain.undone", {"undone_version": 2, "to_version": 1, "state": {
                "name": f"u{arg}", "description": "d", "metadata": {}, "canvas_state": None, "viewport": None,
                "nodes": {n: {"kind": "document", "ref_id": "r", "position": None} for n in m["nodes"]},
                "edges": {e: {"source_id": m["nodes"][0], "target_id": m["nodes"][-1], "type": "flow", "metadata": {}}
                          for e in m["edges"]}, "deleted": False}})
        return NewEvent("chain.updated", {"name": f"c{arg}", "metadata": {"b": arg}})

    def _document(self, sid: str, m: dict, op: int, arg: int) -> NewEvent:
        if m["deleted"]:
            m["deleted"] = False
            return NewEvent("document.restored", {"reason": "oops"})
        choice = op % 7
        if choice == 0:
            m["version"] += 1
            return NewEvent("document.updated", {"content": f"body {arg % 7}", "change_description": "edit",
                                                 "version": m["version"]})
        if choice == 1:
            tag = ("production", "staging")[arg % 2]
            version = 1 + arg % m["version"]
            prev = m["tags"].get(tag)
            m["tags"][tag] = version
            return NewEvent("document.tagged", {"tag": tag, "version": version, "previous_version": prev})
        if choice == 2 and m["tags"]:
            tag = sorted(m["tags"])[0]
            return NewEvent("document.untagged", {"tag": tag, "previous_version": m["tags"].pop(tag)})
        if choice == 3:
            m["deleted"] = True
            return NewEvent("document.deleted", {"reason": "r"})
        if choice == 4:
            m["tags"] = {"production": 1}
            return NewEvent("document.undone", {"undone_version": 3, "to_version": 2, "state": {
                "namespace": "ns0", "document_type": "llm_interaction", "title": "u", "content": None,
                "body": {"j": arg % 3}, "metadata": {}, "version": 1, "deleted": False, "tags": {"production": 1}}})
        return NewEvent("document.updated", {"title": f"t{arg}", "metadata": {"k": arg % 4},
                                             "change_description": "meta", "version": self._bump(m)})

    @staticmethod
    def _bump(m: dict) -> int:
        m["version"] += 1
        return m["version"]

    def _agent(self, sid: str, m: dict, op: int, arg: int) -> NewEvent:
        if m["deleted"]:
            m["deleted"] = False
            return NewEvent("agent.redone", {"redone_version": 2, "to_version": 3, "state": {
                "name": "again", "prompt": "p", "model": "m", "tools": [], "metadata": {}, "deleted": False}})
        choice = op % 5
        if choice in (0, 1):
            m["runs"] += 1
            return NewEvent("agent.executed", {"execution_id": f"{sid}-{m['runs']}", "input": {"q": arg},
                                               "output": {"a": arg}, "duration_ms": arg % 100, "tokens": arg % 50,
                                               "metadata": {}})
        if choice == 2:
            m["deleted"] = True
            return NewEvent("agent.deleted", {"reason": "r"})
        return NewEvent("agent.updated", {"prompt": f"p{arg}", "tools": ["x", "y"]})


def append_history(store: EventStore, history: History, choices: list[tuple[int, int, int]],
                   session: str | None = None) -> int:
    """Append one event per choice; return how many were appended.

    Without `session`, each event's session is one of s0, s1, s2 or none, by its argument, so
    session touches move between sessions."""
    for pick, op, arg in choices:
        sid, event = history.next_event(pick, op, arg)
        meta = {"actor_id": "u", "actor_type": "user"}
        chosen = session if session is not None else (f"s{arg % 4}" if arg % 4 < 3 else None)
        if chosen is not None:
            meta["session_id"] = chosen
        store.append(sid, ANY, [event], meta)
    return len(choices)
