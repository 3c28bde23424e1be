"""The Agent aggregate: name, prompt, model, tools and metadata, plus its executions.

An execution is a record, not a change: undo skips it, and it does not clear redo.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from domain.aggregate import Deleted, Redone, Undone, Updated, WorkspaceAggregate, WorkspaceCreated, WorkspaceEvent
from domain.bounds import Count, ExecutionData, Identifier, Metadata, ModelName, Name, Prompt, Tools
from domain.commands import AgentChanges
from domain.errors import DomainError
from domain.event_types import registry
from domain.rules import (
    ELEMENT_ID,
    MAX_EXECUTION_IO_BYTES,
    MAX_METADATA_BYTES,
    MAX_PROMPT_BYTES,
    MAX_TOOLS,
    MAX_TOOLS_BYTES,
    MODEL_NAME,
    check_count,
    check_identifier,
    check_json,
    check_name,
    check_object,
    check_text,
)


@registry.register("agent.created", stream_type="agent")
class AgentCreated(WorkspaceCreated):
    originator_topic: ClassVar[str] = "domain.agent:Agent"
    name: Name
    prompt: Prompt
    model: ModelName
    tools: Tools
    metadata: Metadata


@registry.register("agent.updated", stream_type="agent")
class AgentUpdated(AgentChanges, Updated):
    pass


@registry.register("agent.deleted", stream_type="agent")
class AgentDeleted(Deleted):
    pass


@registry.register("agent.executed", stream_type="agent")
class AgentExecuted(WorkspaceEvent):
    execution_id: Identifier
    input: ExecutionData
    output: ExecutionData
    duration_ms: Count
    tokens: Count
    metadata: Metadata

    def apply(self, aggregate: Agent) -> None:
        # A record, not a change: the undo and redo stacks are left alone.
        aggregate.executions += 1


@registry.register("agent.undone", stream_type="agent")
class AgentUndone(Undone):
    pass


@registry.register("agent.redone", stream_type="agent")
class AgentRedone(Redone):
    pass


class Agent(WorkspaceAggregate):
    """An agent: name, prompt, model, tools, metadata; its executions are kept in its stream.

    The aggregate counts executions; their details are in the agent.executed events.
    """

    stream_type: ClassVar[str] = "agent"
    deleted_event = AgentDeleted
    undone_event = AgentUndone
    redone_event = AgentRedone
    # Executions are not part of the undo/redo state.
    state_fields = ("name", "prompt", "model", "tools", "metadata", "deleted")

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.prompt = ""
        self.model = ""
        self.tools: list[Any] = []
        self.metadata: dict[str, Any] = {}
        self.executions = 0

    @classmethod
    def create(
        cls,
        agent_id: UUID,
        name: str,
        prompt: str,
        model: str,
        tools: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Agent:
        """A new agent, its agent.created event pending.

        Raises DomainError if a field breaks a rule.
        """
        tools = [] if tools is None else tools
        metadata = {} if metadata is None else metadata
        check_name(name, "name")
        check_text(prompt, "prompt", max_bytes=MAX_PROMPT_BYTES)
        check_identifier(model, "model", MODEL_NAME)
        check_tools(tools)
        check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
        return cls._create(
            AgentCreated, id=agent_id, name=name, prompt=prompt, model=model, tools=tools, metadata=metadata
        )

    # -- commands ----------------------------------------------------------------------------

    def update(
        self,
        name: str | None = None,
        prompt: str | None = None,
        model: str | None = None,
        tools: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Change any of name, prompt, model, tools, metadata; only changed fields go in the event.

        Raises agent_deleted; nothing changed: no event.
        """
        self.check_not_deleted()
        changes: dict[str, Any] = {}
        if name is not None and check_name(name, "name") != self.name:
            changes["name"] = name
        if prompt is not None and check_text(prompt, "prompt", max_bytes=MAX_PROMPT_BYTES) != self.prompt:
            changes["prompt"] = prompt
        if model is not None and check_identifier(model, "model", MODEL_NAME) != self.model:
            changes["model"] = model
        if tools is not None and check_tools(tools) != self.tools:
            changes["tools"] = tools
        if metadata is not None and check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES) != self.metadata:
            changes["metadata"] = metadata
        if changes:
            self.trigger_event(AgentUpdated, **changes)

    def record_execution(
        self,
        execution_id: str,
        input: Any,
        output: Any,
        duration_ms: int,
        tokens: int,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record one run of the agent: its input, output, duration and tokens.

        Raises agent_deleted, too_large, invalid_number.
        """
        metadata = {} if metadata is None else metadata
        self.check_not_deleted()
        check_identifier(execution_id, "execution_id", ELEMENT_ID)
        check_json(input, "input", max_bytes=MAX_EXECUTION_IO_BYTES)
        check_json(output, "output", max_bytes=MAX_EXECUTION_IO_BYTES)
        check_count(duration_ms, "duration_ms")
        check_count(tokens, "tokens")
        check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
        self.trigger_event(
            AgentExecuted,
            execution_id=execution_id,
            input=input,
            output=output,
            duration_ms=duration_ms,
            tokens=tokens,
            metadata=metadata,
        )


def check_tools(tools: Any) -> list[Any]:
    """The agent's tools: a list of at most MAX_TOOLS tool names or tool configurations.

    Returns the value; raises invalid_json or too_large.
    """
    if not isinstance(tools, list):
        raise DomainError("invalid_json", "tools must be a list", field="tools")
    if len(tools) > MAX_TOOLS:
        raise DomainError("too_large", f"an agent has at most {MAX_TOOLS} tools", field="tools")
    for index, tool in enumerate(tools):
        if not isinstance(tool, (str, dict)):
            raise DomainError("invalid_json", "each tool is a name or an object", field=f"tools.{index}")
    check_json(tools, "tools", max_bytes=MAX_TOOLS_BYTES)
    return tools
