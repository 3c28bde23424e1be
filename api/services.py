"""The domain's application service, built for the API's database."""

from __future__ import annotations

from typing import Any

from api.deps import ChronicleState
from service_layer.workspace import Workspace


def build_service(state: ChronicleState) -> Workspace:
    """A Workspace application on Chronicle's persistence module and the API's database.

    It opens its own small pool; `close()` releases it.
    """
    env: dict[str, Any] = {
        "PERSISTENCE_MODULE": "infrastructure.persistence",
        "DATABASE_URL": state.database_url,
        "CHRONICLE_SNAPSHOT_INTERVAL": str(state.settings.chronicle_snapshot_interval),
        "CHRONICLE_POOL_MAX_SIZE": str(state.settings.chronicle_pool_max_size),
    }
    return Workspace(env)
