"""A mixed workspace workload for the benches, decided by Chronicle's own domain.

Chains, documents and agents live in memory as the domain's aggregates; each command calls an
aggregate's command method (so the domain's rules hold) and yields its events as the registered
domain events (`domain.event_types.registry`), dumped the way the persistence module stores them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from domain.agent import Agent
from domain.aggregate import WorkspaceAggregate
from domain.chain import Chain
from domain.document import Document
from domain.errors import DomainError
from domain.ids import uuid7
from domain.event_types import registry
from infrastructure.event_store import NewEvent

# The fields the event store keeps in columns, not in the payload (as infrastructure.persistence).
ENVELOPE = ("originator_id", "originator_version")
# How many recent states each stream keeps for undo and redo.
STATE_WINDOW = 12
SESSIONS = 50


@dataclass(frozen=True)
class Change:
    """One command's effect: the events it appends to one stream at an expected version."""

    stream_id: str
    stream_type: str
    expected_version: int  # 0: the stream is new
    events: list[NewEvent]
    metadata: dict[str, Any]


class Workload:
    """Random but valid workspace commands over a growing set of chains, documents and agents."""

    def __init__(self, seed: int = 1) -> None:
        self.rnd = random.Random(seed)
        self.aggregates: list[WorkspaceAggregate] = []
        self.states: dict[uuid.UUID, dict[int, dict[str, Any]]] = {}
        self.documents: list[str] = []
        self.agents: list[str] = []
        self.commands = 0

    def changes(self, count: int) -> Iterator[Change]:
        """`count` changes, each appending at least one event."""
        for _ in range(count):
            yield self.next_change()

    def next_change(self) -> Change:
        """The next command's change (commands the domain refuses are drawn again)."""
        while True:
            self.commands += 1
            if not self.aggregates or self.rnd.random() < 0.2:
                aggregate = self._create()
            else:
                aggregate = self.aggregates[self.rnd.randrange(len(self.aggregates))]
                try:
                    self._command(aggregate)
                except DomainError:
                    aggregate.collect_events()
                    continue
            events = aggregate.collect_events()
            if not events:
                continue
            self._remember(aggregate)
            first = events[0].originator_version
            return Change(str(aggregate.id), aggregate.stream_type, first - 1, [self._new_event(e) for e in events],
                          {"actor_id": f"user-{self.commands % 7}", "actor_type": "user",
                           "session_id": f"session-{self.commands % SESSIONS}",
                           "correlation_id": str(uuid7())})

    @staticmethod
    def _new_event(event: Any) -> NewEvent:
        """A domain event as the store receives it: type name, payload, and its envelope."""
        payload = event.model_dump(mode="json", exclude=set(ENVELOPE))
        envelope = {"originator_id": str(event.originator_id), "originator_version": event.originator_version}
        return NewEvent(registry.name_of(type(event)), payload, uuid7(), envelope)

    def _remember(self, aggregate: WorkspaceAggregate) -> None:
        window = self.states.setdefault(aggregate.id, {})
        window[aggregate.version] = aggregate.state()
        for version in [v for v in window if v <= aggregate.version - STATE_WINDOW]:
            del window[version]

    def _state_at(self, aggregate: WorkspaceAggregate, version: int) -> dict[str, Any]:
        state = self.states[aggregate.id].get(version)
        if state is None:  # older than the window: the domain would load it; we skip the command
            raise DomainError("bench_window", "state outside the bench's window")
        return state

    def _create(self) -> WorkspaceAggregate:
        n, r = self.commands, self.rnd.randrange(1000)
        kind = self.rnd.choice(("chain", "document", "agent"))
        if kind == "chain":
            aggregate: WorkspaceAggregate = Chain.create(uuid7(), f"chain {n}", "a chain", {"team": f"t{r % 5}"})
        elif kind == "document":
            text = r % 2 == 0
            aggregate = Document.create(
                uuid7(), f"ns{r % 3}", ("llm_interaction", "prompt", "note")[r % 3], f"doc {n}",
                content=f"content {r % 40}" if text else None, body=None if text else {"k": r % 40},
                metadata={"model": f"m{r % 4}", "score": r % 10})
            self.documents.append(str(aggregate.id))
        else:
            aggregate = Agent.create(uuid7(), f"agent {n}", "be helpful", "gpt-x", ["search"], {"tier": r % 3})
            self.agents.append(str(aggregate.id))
        self.aggregates.append(aggregate)
        return aggregate

    def _command(self, a: WorkspaceAggregate) -> None:
        """Call one of the aggregate's command methods; DomainError when the rules refuse it."""
        roll, r = self.rnd.random(), self.rnd.randrange(1000)
        if roll < 0.06 and a.undo_stack:
            a.undo(lambda version: self._state_at(a, version))
        elif roll < 0.09 and a.redo_stack:
            a.redo(lambda version: self._state_at(a, version))
        elif isinstance(a, Chain):
            self._chain(a, r)
        elif isinstance(a, Document):
            self._document(a, r)
        else:
            self._agent(a, r)

    def _chain(self, a: Chain, r: int) -> None:
        roll = self.rnd.random()
        if roll < 0.3 or len(a.nodes) < 2:
            kind, pool = ("document", self.documents) if r % 2 or not self.agents else ("agent", self.agents)
            if not pool:
                raise DomainError("bench_empty", "nothing to put on the canvas yet")
            a.add_node(f"n{a.version}", kind, pool[r % len(pool)], {"x": r, "y": r % 17})
        elif roll < 0.5:
            nodes = sorted(a.nodes)
            a.create_edge(f"e{a.version}", nodes[r % len(nodes)], nodes[(r + 1) % len(nodes)], "flow", {"w": r % 9})
        elif roll < 0.6 and a.edges:
            a.update_edge(sorted(a.edges)[r % len(a.edges)], metadata={"w": r})
        elif roll < 0.67 and a.edges:
            a.delete_edge(sorted(a.edges)[r % len(a.edges)])
        elif roll < 0.72:
            a.remove_node(sorted(a.nodes)[r % len(a.nodes)])
        elif roll < 0.85:
            a.update_canvas({"zoom": r % 5, "grid": True}, {"x": r, "y": 0})
        elif roll < 0.98:
            a.update(name=f"chain {r}", metadata={"team": f"t{r % 5}", "rev": r})
        else:
            a.delete("done")

    def _document(self, a: Document, r: int) -> None:
        roll = self.rnd.random()
        if a.deleted:
            a.restore("needed after all")
        elif roll < 0.45:
            if a.content is not None:
                a.update(content=f"content {r % 40}", change_description="edit")
            else:
                a.update(body={"k": r % 40}, change_description="edit")
        elif roll < 0.6:
            a.update(title=f"doc {r}", metadata={"model": f"m{r % 4}", "score": r % 10}, change_description="meta")
        elif roll < 0.82:
            a.tag(("production", "staging", "review")[r % 3], 1 + r % a.highest_version)
        elif roll < 0.92 and a.tags:
            a.untag(sorted(a.tags)[r % len(a.tags)])
        else:
            a.delete("obsolete")

    def _agent(self, a: Agent, r: int) -> None:
        roll = self.rnd.random()
        if roll < 0.6:
            a.record_execution(f"x{a.version}", {"q": f"question {r}"}, {"a": f"answer {r}"}, r % 900, r % 4000,
                               {"cached": r % 2 == 0})
        elif roll < 0.95:
            a.update(prompt=f"prompt {r}", tools=["search", f"tool{r % 3}"])
        else:
            a.delete("retired")
