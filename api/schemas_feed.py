"""Response and request bodies of the feed, consumer groups and the event contract."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import JSON, EventOut, Out

GROUP = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class SubscriptionOut(Out):
    """One open feed: who follows it, with which filters, and how far it has got."""

    id: str
    key_id: str
    format: str
    filters: dict[str, list[str]]
    started_after: int
    position: int = Field(description="everything up to here is sent (or did not match)")
    events_sent: int
    lag_positions: int = Field(description="positions between the feed and the safe position")
    opened_at: str
    seen_at: str
    server_pid: int
    stale: bool = Field(description="its server has not written for three heartbeats (it died?)")


class SubscriptionList(Out):
    subscriptions: list[SubscriptionOut]


class JoinIn(BaseModel):
    """A member joining a group: an optional name for operators, and its lease."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100)
    lease_seconds: int | None = Field(None, ge=1, le=3600, description="default CHRONICLE_GROUP_LEASE_SECONDS")


class MemberOut(Out):
    """A member, its lease and the partitions it owns now (they change as members come and go)."""

    member_id: str
    group: str
    name: str | None = None
    lease_seconds: int
    lease_expires_at: str
    partitions: list[int]


class GroupEventOut(EventOut):
    partition: int = Field(description="the group partition of the event's stream")


class GroupEventsOut(Out):
    """Events of the member's partitions after their checkpoints, each stream's in order."""

    events: list[GroupEventOut]
    partitions: list[int]
    position: int = Field(description="read up to here; ack it to move partitions without events along")


class PositionIn(BaseModel):
    """A log position the member has handled (ack) or failed (nack)."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=1, le=2**63 - 1)


class SeekIn(BaseModel):
    """Where an operator moves a consumer group's checkpoints (0: the log's start)."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0, le=2**63 - 1)


class SeekOut(Out):
    group: str
    position: int = Field(description="every partition's checkpoint now; the next fetch reads after it")
    previous_checkpoints: dict[str, int] = Field(description="each partition's checkpoint before, by partition")
    operator_event_position: int = Field(description="the log position of the operator.group_moved event")


class NackIn(PositionIn):
    error: str = Field(min_length=1, max_length=4000)


class CheckpointOut(Out):
    partition: int
    position: int


class AckOut(Out):
    group: str
    member_id: str
    checkpoints: list[CheckpointOut]


class ParkedOut(Out):
    dead_letter_id: int
    position: int
    stream_id: str


class NackOut(Out):
    group: str
    member_id: str
    parked: list[ParkedOut]


class GroupMemberStatus(Out):
    member_id: str
    name: str | None = None
    joined_at: str
    seen_at: str
    lease_expires_at: str
    alive: bool
    partitions: list[int]


class GroupPartitionStatus(Out):
    partition: int
    owner: str | None = Field(None, description="the member that owns it now, if any")
    checkpoint: int
    delivered: int
    lag_events: int


class GroupOut(Out):
    """A group's members, partitions, checkpoints, lag and parked events."""

    name: str
    partition_count: int
    created_at: str
    lag_events: int
    dead_letters: int
    members: list[GroupMemberStatus]
    partitions: list[GroupPartitionStatus]


class GroupsOut(Out):
    groups: list[GroupOut]
    safe_position: int


class EventTypeOut(Out):
    """An event type at one schema version, and the JSON Schema of its stored payload."""

    type: str
    schema_version: int
    stream_type: str
    current: bool = Field(description="the version events are appended at now (older ones are upcast)")
    json_schema: dict[str, JSON]


class EventTypeList(Out):
    event_types: list[EventTypeOut]
