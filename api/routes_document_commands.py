"""Commands on documents over HTTP: create, update, delete, restore, tag.

Each route builds a domain command and runs it through `api.commanding.execute`.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AliasChoices, Field

from api.commanding import Ctx, ReasonIn, State, Strict, created, execute
from api.deps import ChronicleState, CommandRequest
from api.schemas import ExactRoute, CommandOut
from domain import commands as c
from domain.bounds import Body, Content, DocumentVersion, Identifier, Metadata, Reason, Title

router = APIRouter(prefix="/v1", tags=["commands"], route_class=ExactRoute)


# -- documents -------------------------------------------------------------------------------

class DocumentIn(Strict):
    document_id: UUID | None = None
    namespace: Identifier
    type: Identifier = Field(description="document type, e.g. session_context")
    title: Title
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata = Field(default_factory=dict)


class DocumentPatch(c.DocumentChanges, Strict):
    pass


class TagIn(Strict):
    """The document version a tag points at (`version` is accepted as its older name)."""

    document_version: DocumentVersion = Field(validation_alias=AliasChoices("document_version", "version"))


@router.post("/documents", status_code=201, summary="Create a document")
def create_document(body: DocumentIn, request: Request, response: Response, state: ChronicleState = State,
                    ctx: CommandRequest = Ctx) -> CommandOut:
    """Create a document (text content or a JSON body); its id is given or made."""
    fields = body.model_dump()
    fields["document_type"] = fields.pop("type")
    return created(response, "documents", execute(state, request, response, ctx, c.CreateDocument, **fields))


@router.patch("/documents/{document_id}", summary="Update a document (a new version)")
def update_document(document_id: UUID, body: DocumentPatch, request: Request, response: Response,
                    state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Change title, content, body or metadata, with a change description."""
    return execute(state, request, response, ctx, c.UpdateDocument, document_id=document_id, **body.model_dump())


@router.delete("/documents/{document_id}", summary="Delete a document")
def delete_document(document_id: UUID, request: Request, response: Response,
                    reason: Annotated[Reason | None, Query()] = None,
                    state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Delete a document; its versions stay readable and it can be restored."""
    return execute(state, request, response, ctx, c.DeleteDocument, document_id=document_id, reason=reason)


@router.post("/documents/{document_id}/restore", summary="Restore a deleted document")
def restore_document(document_id: UUID, request: Request, response: Response, body: ReasonIn | None = None,
                     state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Bring a deleted document back as it was."""
    return execute(state, request, response, ctx, c.RestoreDocument, document_id=document_id,
                   reason=body.reason if body else None)


@router.put("/documents/{document_id}/tags/{tag}", summary="Point a tag at a version")
def put_tag(document_id: UUID, body: TagIn, request: Request, response: Response,
            tag: Annotated[Identifier, Path()], state: ChronicleState = State,
            ctx: CommandRequest = Ctx) -> CommandOut:
    """Tag a version that exists (moving the tag if it pointed elsewhere)."""
    return execute(state, request, response, ctx, c.TagDocument, document_id=document_id, tag=tag,
                   version=body.document_version)


@router.delete("/documents/{document_id}/tags/{tag}", summary="Remove a tag")
def delete_tag(document_id: UUID, request: Request, response: Response, tag: Annotated[Identifier, Path()],
               state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Remove a tag from the document."""
    return execute(state, request, response, ctx, c.UntagDocument, document_id=document_id, tag=tag)
