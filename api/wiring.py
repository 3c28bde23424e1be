"""Where the API meets the parts built beside it: the domain service, projections, workers.

Each part is imported when it is there, so the API runs (audit, keys, health, reads) on
the store alone and gains routes as the domain and the projections land.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from api.deps import ChronicleState

logger = logging.getLogger("chronicle.api")


def domain_error_classes() -> list[type[Exception]]:
    """The domain's error base classes, mapped to problem+json by their `code`."""
    classes: list[type[Exception]] = []
    try:
        from domain.errors import DomainError

        classes.append(DomainError)
    except ImportError:
        pass
    try:
        from domain.event_types import EventTypeError

        classes.append(EventTypeError)
    except ImportError:
        pass
    return classes


def routers() -> list[APIRouter]:
    """The routers of the parts that exist: reads always, commands and operations if present."""
    from api import routes_reads

    found = [routes_reads.router]
    for module in ("api.routes_commands", "api.routes_operations"):
        try:
            found.append(__import__(module, fromlist=["router"]).router)
        except ImportError as exc:
            logger.info("%s not wired: %s", module, exc)
    return found


def wire(state: ChronicleState) -> None:
    """Attach the domain's application service and the read-your-writes check to `state`."""
    state.extras["projected_position"] = projected_position_checker(state, projection_stream_types())
    try:
        from api.services import build_service

        state.service = build_service(state)
    except ImportError as exc:
        logger.info("domain service not wired: %s", exc)
    if state.broker in ("redis", "in-process"):
        # Someone runs workers: wake them after each append (the API's own and the service's).
        try:
            from api.inprocess import wake_projection
            from workers.wakeups import install_wakeups

            stores = [state.store]
            datastore = getattr(getattr(state.service, "factory", None), "datastore", None)
            if datastore is not None:
                stores.append(datastore.store)
            for store in stores:
                install_wakeups(store, state.settings.chronicle_partitions)
            state.extras["wake"] = wake_projection(state.settings.chronicle_partitions)
        except ImportError as exc:
            logger.info("worker wake-ups not wired: %s", exc)


def unwire(state: ChronicleState) -> None:
    """Release what `wire` attached."""
    close = getattr(state.service, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001
            logger.exception("closing the application service failed")


def projection_stream_types() -> dict[str, tuple[str, ...]]:
    """Each projection's name and the stream types it reads, from projections/ if present."""
    try:
        from projections.catalog import PROJECTORS
    except ImportError:
        return {}
    return {name: tuple(p.stream_types) for name, p in PROJECTORS.items()}


def projected_position_checker(
    state: ChronicleState, stream_types: dict[str, tuple[str, ...]]
) -> Callable[[int], int]:
    """A function: how far (up to a wanted position N) every projection has got.

    A partition has reached N when its checkpoint is at N or it has no event of its
    projection's stream types between its checkpoint and N. Returns N once all have.
    """

    def reached(wanted: int, names: tuple[str, ...] | None = None) -> int:
        with state.pool.connection() as conn:
            row = conn.execute(
                """
                SELECT safe_position() AS safe,
                       count(c.*) AS partitions,
                       coalesce(min(c.position), 0) AS lowest,
                       coalesce(bool_and(
                           c.position >= %(n)s OR NOT EXISTS (
                               SELECT 1 FROM events e
                               WHERE e.position > c.position AND e.position <= %(n)s
                                 AND (cardinality(coalesce(t.types, '{}')) = 0 OR e.stream_type = ANY (t.types))
                                 AND projection_partition(e.stream_id, p.partitions) = c.partition)
                       ), true) AS done
                FROM projection p
                JOIN projection_checkpoint c ON c.projection = p.name
                LEFT JOIN (SELECT key AS name, array(SELECT jsonb_array_elements_text(value)) AS types
                           FROM jsonb_each(%(types)s::jsonb)) t ON t.name = p.name
                WHERE %(names)s::text[] IS NULL OR p.name = ANY(%(names)s::text[])
                """,
                {"n": wanted, "types": _json(stream_types), "names": list(names) if names else None},
            ).fetchone()
        if row["safe"] < wanted:
            return min(row["safe"], row["lowest"]) if row["partitions"] else row["safe"]
        if row["partitions"] == 0:
            # No projection has started: nothing to wait for beyond the log itself.
            return wanted if not stream_types else row["lowest"]
        return wanted if row["done"] else row["lowest"]

    return reached


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def service_call(state: ChronicleState, name: str) -> Callable[..., Any]:
    """The application service's method `name`; 501 problem if the domain has none."""
    from api.problems import Problem

    method = getattr(state.service, name, None) if state.service is not None else None
    if method is None:
        raise Problem(501, "not_implemented", f"the domain service has no {name} yet")
    return method
