"""A session's reads on the record: `document.accessed`, one event per session read.

A session (the `X-Session-Id` a service sends) is not an aggregate: nothing is decided on it.
Its stream (`session:<id>`, stream type "session") only records which documents a caller read
in it, so an auditor can answer "what did this session see, and when".
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.bounds import MAX_CONTEXT_ID_CHARS, ContextId, Count, Identifier
from domain.event_types import registry

SESSION_STREAM_TYPE = "session"
# A read names at most this many documents (the API's page size is bounded far below it).
MAX_ACCESSED_DOCUMENTS = 10_000
# Most types one read filters by.
MAX_ACCESSED_TYPES = 50
# A document id as the store accepts a stream id.
DocumentId = Annotated[str, Field(max_length=200)]
_PREFIX = "session:"


@registry.register("document.accessed", stream_type=SESSION_STREAM_TYPE)
class DocumentAccessed(BaseModel):
    """A caller read documents in a session: who, under which trace, how many, which types and ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: ContextId
    actor_id: ContextId | None = None
    actor_type: Literal["user", "agent", "service", "system"] | None = None
    trace_id: ContextId | None = Field(None, description="the request's correlation id")
    document_count: Count
    types: list[Identifier] = Field(default_factory=list, max_length=MAX_ACCESSED_TYPES,
                                    description="the types asked for (none: every type)")
    document_ids: list[DocumentId] = Field(default_factory=list, max_length=MAX_ACCESSED_DOCUMENTS)
    include_body: bool = True


def session_stream_id(session_id: str) -> str:
    """The stream a session's reads are recorded in: `session:<id>`, or, for an id too long to
    fit a stream id (200 characters), `session:sha256:<hex of the id>`."""
    if len(_PREFIX) + len(session_id) <= MAX_CONTEXT_ID_CHARS:
        return _PREFIX + session_id
    return _PREFIX + "sha256:" + hashlib.sha256(session_id.encode()).hexdigest()
