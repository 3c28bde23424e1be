"""The eventsourcing library's persistence module on Chronicle's own store.

With PERSISTENCE_MODULE=infrastructure.persistence and DATABASE_URL set, any eventsourcing
Application records its events in Chronicle's `events` table through EventStore:
payloads as readable jsonb, the originator id and version as the stream id and version
columns, the application's name as the notification log (`log_name`), `save()` keyword
arguments in `metadata`, global positions as notification ids (gap-free via read_log).
Snapshots go to `snapshots`, tracking records to `tracking` (schema/0002_eventsourcing.sql).

Events that are pydantic models registered in `domain.event_types.registry` are stored
under their stable type name and schema version, validated by the registry, and upcast
when read. Other events (the library's dataclass-style ones) are stored under their topic.

The recorders live in infrastructure/eventsourcing_recorders.py, the mapper (events <-> jsonb
payloads) in infrastructure/eventsourcing_mapper.py; this module holds the factory.
"""

from __future__ import annotations

import threading
from typing import Any

from domain.event_types import EventTypeRegistry
from domain.event_types import registry as default_registry
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    InfrastructureFactoryError,
    Mapper,
    ProcessRecorder,
    Transcoder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool
from infrastructure.config import Settings
from infrastructure.event_store import DEFAULT_LOG
from infrastructure.eventsourcing_mapper import (
    ChronicleMapper,
    ChronicleStoredEvent,
    UnreadablePayloadSettings,
    refuse_unreadable_payloads,
)
from infrastructure.eventsourcing_recorders import (
    ChronicleApplicationRecorder,
    ChronicleDatastore,
    ChronicleProcessRecorder,
    ChronicleSnapshotRecorder,
    ChronicleTrackingRecorder,
    CommandEvent,
    _ChronicleRecorder,
)


__all__ = [
    "ChronicleApplicationRecorder",
    "ChronicleDatastore",
    "ChronicleFactory",
    "ChronicleMapper",
    "ChronicleProcessRecorder",
    "ChronicleSnapshotRecorder",
    "ChronicleStoredEvent",
    "ChronicleTrackingRecorder",
    "CommandEvent",
    "UnreadablePayloadSettings",
]


# -- the factory ------------------------------------------------------------------------------

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def _ensure_migrated(url: str) -> None:
    """Apply Chronicle's migrations once per process and database (CREATE_TABLE=yes)."""
    with _migrate_lock:
        if url in _migrated:
            return
        from infrastructure.migrations import migrate, pending_migrations

        if pending_migrations(url):
            from infrastructure.config import get_settings

            migrate(get_settings().database_migration_url or url)
        _migrated.add(url)


class ChronicleFactory(InfrastructureFactory[ChronicleTrackingRecorder]):
    """The eventsourcing infrastructure factory for Chronicle's PostgreSQL store.

    Reads DATABASE_URL (or <APP>_DATABASE_URL) and Chronicle's settings from the environment.
    """

    DATABASE_URL = "DATABASE_URL"
    CREATE_TABLE = "CREATE_TABLE"
    # Topic of the EventTypeRegistry of pydantic events (default domain.event_types:registry).
    EVENT_REGISTRY_TOPIC = "EVENT_REGISTRY_TOPIC"

    aggregate_recorder_class = ChronicleSnapshotRecorder
    application_recorder_class = ChronicleApplicationRecorder
    tracking_recorder_class = ChronicleTrackingRecorder
    process_recorder_class = ChronicleProcessRecorder

    def __init__(self, env: Environment | EnvType | None, registry: EventTypeRegistry = default_registry) -> None:
        super().__init__(env)
        self.settings = self._settings()
        url = self.env.get(self.DATABASE_URL) or self.settings.database_url
        if not url:
            raise OSError(
                "Chronicle's persistence module needs DATABASE_URL (or <APPLICATION>_DATABASE_URL)"
                " in the environment, e.g. postgresql://127.0.0.1:5432/chronicle"
            )
        if strtobool(self.env.get(self.CREATE_TABLE) or "yes"):
            _ensure_migrated(self.settings.database_direct_url or url)  # a session lock: past any pooler
        registry_topic = self.env.get(self.EVENT_REGISTRY_TOPIC)
        self.registry = resolve_topic(registry_topic) if registry_topic else registry
        self.datastore = ChronicleDatastore(
            url, self.settings, self.registry, name=f"eventsourcing:{self.env.name or DEFAULT_LOG}"
        )

    def _settings(self) -> Settings:
        overrides = {}
        for name in Settings.model_fields:
            value = self.env.get(name.upper())
            if value is not None:
                overrides[name] = value
        return Settings(**overrides)

    @property
    def log_name(self) -> str:
        """The notification log of this factory's application: its name."""
        return self.env.name or DEFAULT_LOG

    def mapper(
        self, transcoder: Transcoder | None = None, mapper_class: type[Mapper[Any]] | None = None
    ) -> Mapper[Any]:
        """A ChronicleMapper (or MAPPER_TOPIC's class); ciphers and compressors are refused."""
        cipher, compressor = self.cipher(), self.compressor()
        refuse_unreadable_payloads(cipher, compressor)
        if mapper_class is None and self.env.get(self.MAPPER_TOPIC):
            mapper_class = resolve_topic(self.env.get(self.MAPPER_TOPIC))
        transcoder = transcoder or self.transcoder()
        if mapper_class is None or mapper_class is ChronicleMapper:
            return ChronicleMapper(transcoder, registry=self.registry)
        return mapper_class(transcoder=transcoder)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """A recorder on the `snapshots` table (the library asks with purpose="snapshots")."""
        log_name = self.log_name if purpose == "snapshots" else f"{self.log_name}:{purpose}"
        return self.aggregate_recorder_class(self.datastore, log_name=log_name)

    def application_recorder(self) -> ApplicationRecorder:
        """The application's recorder on `events`, its log named after the application."""
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.application_recorder_class
        return cls(self.datastore, log_name=self.log_name, tracker=self.log_name)

    def tracking_recorder(
        self, tracking_recorder_class: type[ChronicleTrackingRecorder] | None = None
    ) -> ChronicleTrackingRecorder:
        """A tracking recorder (or a materialised view subclass) tracking as this env's name."""
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else self.tracking_recorder_class
        assert tracking_recorder_class is not None
        if not issubclass(tracking_recorder_class, _ChronicleRecorder):
            raise InfrastructureFactoryError(
                f"{tracking_recorder_class.__name__} must subclass ChronicleTrackingRecorder"
            )
        return tracking_recorder_class(self.datastore, log_name=self.log_name, tracker=self.log_name)

    def process_recorder(self) -> ProcessRecorder:
        """Events and tracking in one transaction, for process applications."""
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.process_recorder_class
        return cls(self.datastore, log_name=self.log_name, tracker=self.log_name)

    def close(self) -> None:
        """Release the connection pool."""
        self.datastore.close()
