"""Every use of a library's internals, in one place; tests/test_library_internals.py pins each down.

Where a library offers no public way to do what Chronicle needs, the private name is touched
here and nowhere else, so an upgrade that renames it fails that test instead of production:

* eventsourcing's ListenNotifySubscription keeps its stop flag, wake-up event and pull thread's
  error in private attributes; ChronicleSubscription's LISTEN thread must read and set them.
* eventsourcing's mapper converts originator ids by the event class's id type; whether a class
  wants str ids is asked of its id convertor (find_id_convertor, undocumented).
* prometheus_client picks its value class (in-memory or multiprocess files) once, at import;
  a worker that sets PROMETHEUS_MULTIPROC_DIR later must have it picked again.
* dramatiq builds a Message from a declared actor; a process that only sends wake-ups (the API)
  declares no actors, so it builds the message the actor would.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast
from uuid import uuid4

import dramatiq
from eventsourcing.persistence import ListenNotifySubscription, find_id_convertor

# -- eventsourcing: ListenNotifySubscription -----------------------------------------------------


def subscription_running(subscription: ListenNotifySubscription[Any]) -> bool:
    """Whether the subscription is neither stopped nor failed (its LISTEN thread keeps going)."""
    return not subscription._has_been_stopped and subscription._thread_error is None


def wake_subscription(subscription: ListenNotifySubscription[Any]) -> None:
    """Make the subscription's pull thread pull now (what the library's own NOTIFY handling does)."""
    subscription._has_been_notified.set()


def fail_subscription(subscription: ListenNotifySubscription[Any], error: BaseException) -> None:
    """Stop the subscription so that its iterator raises `error` (the first one recorded wins)."""
    if subscription._thread_error is None:
        subscription._thread_error = error
    subscription.stop()


# -- eventsourcing: originator id types ----------------------------------------------------------


def event_wants_str_ids(event_class: type) -> bool:
    """Whether the library would hand `event_class` a str originator id given a UUID-shaped str.

    Asked of the convertor's behaviour, not its name. False where the library finds no id type.
    """
    try:
        convertor = find_id_convertor(event_class, cast(Hashable, str))
    except TypeError:
        return False
    return isinstance(convertor(str(uuid4())), str)


# -- prometheus_client: the value class ------------------------------------------------------------


def repick_prometheus_value_class() -> None:
    """Have metrics created from now on use the value class the environment now asks for.

    prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, when `prometheus_client.values` is
    first imported; there is no public way to read it again.
    """
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


# -- dramatiq: messages for actors this process does not declare ----------------------------------


def actor_message(queue_name: str, actor_name: str, args: tuple[Any, ...]) -> dramatiq.Message[Any]:
    """The message `actor_name`'s `.send(*args)` would enqueue, for a process that lacks the actor."""
    return dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={})
