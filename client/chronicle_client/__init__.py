"""A Python client for Chronicle: typed commands with safe retries, subscriptions, consumer groups.

    from chronicle_client import Chronicle
    with Chronicle("http://127.0.0.1:8000", key) as chronicle:
        made = chronicle.documents.create("notes", "memo", "Hello", content="v1")
"""

from chronicle_client.aio import AsyncChronicle
from chronicle_client.calls import LAST_SEEN
from chronicle_client.client import Chronicle
from chronicle_client.errors import (
    ChronicleError, ConflictError, Forbidden, Gone, NotFound, ServerError, Unauthorized, Unavailable, ValidationError,
)
from chronicle_client.groups import AsyncGroupMember, GroupMember
from chronicle_client.models import (
    Agent, Chain, CommandResult, Document, Edge, Event, EventPage, GroupBatch, Membership,
)
from chronicle_client.retry import RetryPolicy
from chronicle_client.subscribe import AsyncSubscription, Subscription

__all__ = [
    "LAST_SEEN", "Agent", "AsyncChronicle", "AsyncGroupMember", "AsyncSubscription", "Chain", "Chronicle",
    "ChronicleError", "CommandResult", "ConflictError", "Document", "Edge", "Event", "EventPage", "Forbidden", "Gone",
    "GroupBatch", "GroupMember", "Membership", "NotFound", "RetryPolicy", "ServerError", "Subscription",
    "Unauthorized", "Unavailable", "ValidationError",
]
