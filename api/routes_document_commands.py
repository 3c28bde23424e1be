"""Commands on documents over HTTP: create, update, delete, restore, tag.

Each route builds a domain command and runs it through `api.commanding.execute`; the create,
update and delete routes every stream kind has alike are made by `api.stream_routes`. Request
bodies derive from the field sets they share with their commands (domain.commands).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request, Response
from pydantic import AliasChoices, Field

from api.commanding import CommandRequest, Ctx, ReasonIn, Strict, created, execute
from api.schemas import ExactRoute, CommandOut
from api.stream_routes import add_delete, add_update
from domain import commands as c
from domain.bounds import Body, Content, DocumentVersion, Identifier, Metadata, Title

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
def create_document(body: DocumentIn, request: Request, response: Response, ctx: CommandRequest = Ctx) -> CommandOut:
    """Create a document (text content or a JSON body); its id is given or made."""
    fields = body.model_dump()
    fields["document_type"] = fields.pop("type")
    return created(response, "documents", execute(request, response, ctx, c.CreateDocument, **fields))


add_update(router, "documents", DocumentPatch, c.UpdateDocument, "Update a document (a new version)",
           "Change title, content, body or metadata, with a change description.")
add_delete(router, "documents", c.DeleteDocument, "Delete a document",
           "Delete a document; its versions stay readable and it can be restored.")


@router.post("/documents/{document_id}/restore", summary="Restore a deleted document")
def restore_document(document_id: UUID, request: Request, response: Response, body: ReasonIn | None = None,
                     ctx: CommandRequest = Ctx) -> CommandOut:
    """Bring a deleted document back as it was."""
    return execute(request, response, ctx, c.RestoreDocument, document_id=document_id,
                   reason=body.reason if body else None)


@router.put("/documents/{document_id}/tags/{tag}", summary="Point a tag at a version")
def put_tag(document_id: UUID, body: TagIn, request: Request, response: Response,
            tag: Annotated[Identifier, Path()], ctx: CommandRequest = Ctx) -> CommandOut:
    """Tag a version that exists (moving the tag if it pointed elsewhere)."""
    return execute(request, response, ctx, c.TagDocument, document_id=document_id, tag=tag,
                   version=body.document_version)


@router.delete("/documents/{document_id}/tags/{tag}", summary="Remove a tag")
def delete_tag(document_id: UUID, request: Request, response: Response, tag: Annotated[Identifier, Path()],
               ctx: CommandRequest = Ctx) -> CommandOut:
    """Remove a tag from the document."""
    return execute(request, response, ctx, c.UntagDocument, document_id=document_id, tag=tag)
