"""Every projector Chronicle runs, by name."""

from __future__ import annotations

import domain.agent  # noqa: F401 - the aggregates register the event types the projectors
import domain.chain  # noqa: F401   read, so a batch upcasts payloads stored under older versions
import domain.document  # noqa: F401
from projections import agents, chains, documents
from projections.model import Projector

PROJECTORS: dict[str, Projector] = {
    p.name: p for p in (chains.projector, documents.projector, agents.projector)
}


def get_projector(name: str) -> Projector:
    """The projector called `name`; KeyError names the known ones."""
    try:
        return PROJECTORS[name]
    except KeyError:
        raise KeyError(f"unknown projection {name!r}; known: {sorted(PROJECTORS)}") from None


def projectors_for(stream_type: str | None) -> list[Projector]:
    """The projectors a stream type feeds (all of them when the type is unknown)."""
    return [p for p in PROJECTORS.values() if stream_type is None or stream_type in p.stream_types]
