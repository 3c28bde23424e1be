"""The Document aggregate: a namespaced, typed document with versions and tags.

`version` is the content version (1, 2, 3...). Every update takes the highest version
ever + 1, so numbers are never reused and a tag always means the same content. A tag
points at a version that has existed; moving it is a new event (the tag's audit trail).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import Field

from domain.aggregate import Change, Deleted, Redone, Undone, WorkspaceAggregate, WorkspaceCreated
from domain.bounds import (
    INT4_MAX, Body, ChangeDescription, Content, DocumentVersion, Identifier, Metadata, Reason, Title,
)
from domain.errors import DomainError
from domain.event_types import registry
from domain.personal import PERSONAL
from domain.rules import (
    MAX_BODY_BYTES,
    MAX_CHANGE_DESCRIPTION_CHARS,
    MAX_CONTENT_BYTES,
    MAX_METADATA_BYTES,
    MAX_REASON_CHARS,
    MAX_TAGS,
    MAX_TITLE_CHARS,
    check_count,
    check_identifier,
    check_name,
    check_object,
    check_text,
)


# A document's text content and JSON body are personal: documents of types such as
# session_context, llm_interaction and user_feedback hold people's conversations, and an
# update or undo does not carry the document's type, so every document's content is treated so.
PERSONAL_STATE = ("content", "body")
PersonalContent = Annotated[Content | None, Field(**PERSONAL)]
PersonalBody = Annotated[Body | None, Field(**PERSONAL)]
PersonalText = Annotated[ChangeDescription, Field(**PERSONAL)]


@registry.register("document.created", stream_type="document")
class DocumentCreated(WorkspaceCreated):
    originator_topic: ClassVar[str] = "domain.document:Document"
    namespace: Identifier
    document_type: Identifier
    title: Title
    content: PersonalContent
    body: PersonalBody
    metadata: Metadata
    version: DocumentVersion = 1

    def apply(self, aggregate: Document) -> None:
        self.assign(aggregate, "namespace", "document_type", "title", "content", "body", "metadata")
        aggregate.content_version = self.version
        aggregate.highest_version = self.version


@registry.register("document.updated", stream_type="document")
class DocumentUpdated(Change):
    title: Title | None = None
    content: PersonalContent = None
    body: PersonalBody = None
    metadata: Metadata | None = None
    change_description: PersonalText
    version: DocumentVersion

    def change(self, aggregate: Document) -> None:
        self.assign(aggregate, "title", "content", "body", "metadata", given_only=True)
        aggregate.content_version = self.version
        aggregate.highest_version = max(aggregate.highest_version, self.version)


@registry.register("document.deleted", stream_type="document")
class DocumentDeleted(Deleted):
    pass


@registry.register("document.restored", stream_type="document")
class DocumentRestored(Change):
    reason: Reason | None = None

    def change(self, aggregate: Document) -> None:
        aggregate.deleted = False


@registry.register("document.tagged", stream_type="document")
class DocumentTagged(Change):
    tag: Identifier
    version: DocumentVersion
    previous_version: DocumentVersion | None = None

    def change(self, aggregate: Document) -> None:
        aggregate.tags[self.tag] = self.version


@registry.register("document.untagged", stream_type="document")
class DocumentUntagged(Change):
    tag: Identifier
    previous_version: DocumentVersion

    def change(self, aggregate: Document) -> None:
        aggregate.tags.pop(self.tag, None)


@registry.register("document.undone", stream_type="document")
class DocumentUndone(Undone):
    personal_paths: ClassVar[tuple[str, ...]] = tuple(f"state.{name}" for name in PERSONAL_STATE)


@registry.register("document.redone", stream_type="document")
class DocumentRedone(Redone):
    personal_paths: ClassVar[tuple[str, ...]] = tuple(f"state.{name}" for name in PERSONAL_STATE)


class Document(WorkspaceAggregate):
    """A document: namespace, type, title, text content or a JSON body, metadata, version, tags.

    A document holds either text content or a JSON body, chosen when it is created.
    """

    stream_type: ClassVar[str] = "document"
    personal_state: ClassVar[tuple[str, ...]] = PERSONAL_STATE
    deleted_event = DocumentDeleted
    undone_event = DocumentUndone
    redone_event = DocumentRedone
    # `version` in the state is the content version.
    state_fields = ("namespace", "document_type", "title", "content", "body", "metadata", "version", "deleted", "tags")
    state_attributes = {"version": "content_version"}

    def __init__(self) -> None:
        super().__init__()
        self.namespace = ""
        self.document_type = ""
        self.title = ""
        self.content: str | None = None
        self.body: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}
        self.content_version = 1
        self.highest_version = 1
        self.tags: dict[str, int] = {}

    @classmethod
    def create(
        cls,
        document_id: UUID,
        namespace: str,
        document_type: str,
        title: str,
        content: str | None = None,
        body: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Document:
        """A new document at version 1, its document.created event pending.

        Raises content_or_body unless exactly one of content and body is given.
        """
        metadata = {} if metadata is None else metadata
        check_identifier(namespace, "namespace")
        check_identifier(document_type, "document_type")
        check_name(title, "title", max_chars=MAX_TITLE_CHARS)
        if (content is None) == (body is None):
            raise DomainError(
                "content_or_body", "a document holds either text content or a JSON body", field="content"
            )
        check_text(content, "content", max_bytes=MAX_CONTENT_BYTES, allow_none=True)
        if body is not None:
            check_object(body, "body", max_bytes=MAX_BODY_BYTES)
        check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
        return cls._create(
            DocumentCreated,
            id=document_id,
            namespace=namespace,
            document_type=document_type,
            title=title,
            content=content,
            body=body,
            metadata=metadata,
            version=1,
        )

    # -- state -------------------------------------------------------------------------------

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the document's state (undo/redo), version included.

        The highest version ever is bookkeeping and stays.
        """
        super().set_state(state)
        self.highest_version = max(self.highest_version, state["version"])

    # -- commands ----------------------------------------------------------------------------

    def update(
        self,
        title: str | None = None,
        content: str | None = None,
        body: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        change_description: str = "",
    ) -> None:
        """A new content version: the changed fields, numbered highest version ever + 1.

        Raises document_deleted, content_kind; nothing changed: no event.
        """
        self.check_not_deleted()
        check_text(change_description, "change_description", max_bytes=MAX_CHANGE_DESCRIPTION_CHARS)
        changes: dict[str, Any] = {}
        if title is not None and check_name(title, "title", max_chars=MAX_TITLE_CHARS) != self.title:
            changes["title"] = title
        if content is not None:
            if self.content is None:
                raise DomainError("content_kind", "this document holds a JSON body, not text", field="content")
            if check_text(content, "content", max_bytes=MAX_CONTENT_BYTES) != self.content:
                changes["content"] = content
        if body is not None:
            if self.body is None:
                raise DomainError("content_kind", "this document holds text content, not a body", field="body")
            if check_object(body, "body", max_bytes=MAX_BODY_BYTES) != self.body:
                changes["body"] = body
        if metadata is not None and check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES) != self.metadata:
            changes["metadata"] = metadata
        if changes:
            self.trigger_event(
                DocumentUpdated,
                change_description=change_description,
                version=self.highest_version + 1,
                **changes,
            )

    def restore(self, reason: str | None = None) -> None:
        """Undelete the document.

        Raises not_deleted if it is not deleted.
        """
        if not self.deleted:
            raise DomainError("not_deleted", f"document {self.id} is not deleted", field="document_id")
        check_text(reason, "reason", max_bytes=MAX_REASON_CHARS, allow_none=True)
        self.trigger_event(DocumentRestored, reason=reason)

    def tag(self, tag: str, version: int) -> None:
        """Point `tag` at a content version that has existed; moving a tag is a new event.

        Raises version_not_found, document_deleted, too_many; already there: no event.
        """
        self.check_not_deleted()
        check_identifier(tag, "tag")
        check_count(version, "version", minimum=1, maximum=INT4_MAX)
        if version > self.highest_version:
            raise DomainError(
                "version_not_found",
                f"document {self.id} has no version {version} (highest is {self.highest_version})",
                field="version",
            )
        previous = self.tags.get(tag)
        if previous == version:
            return
        if previous is None and len(self.tags) >= MAX_TAGS:
            raise DomainError("too_many", f"a document holds at most {MAX_TAGS} tags", field="tag")
        self.trigger_event(DocumentTagged, tag=tag, version=version, previous_version=previous)

    def untag(self, tag: str) -> None:
        """Remove a tag.

        Raises tag_not_found, document_deleted.
        """
        self.check_not_deleted()
        check_identifier(tag, "tag")
        if tag not in self.tags:
            raise DomainError("tag_not_found", f"document {self.id} has no tag {tag!r}", field="tag")
        self.trigger_event(DocumentUntagged, tag=tag, previous_version=self.tags[tag])
