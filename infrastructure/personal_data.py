"""Crypto-shredding: personal fields are stored encrypted with their subject's data key.

Each data subject has one data key (table `data_keys`), wrapped by the master key of the
settings. An encrypted value is a self-describing envelope naming its subject and key, so a
reader knows which key to ask for; a key that is gone reads as the erased marker. AES-GCM
comes from the `cryptography` package.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid4

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.utils import TopicError, resolve_topic
from psycopg.rows import tuple_row
from pydantic_core import from_json, to_json

from domain.personal import ANONYMOUS_SUBJECT, erased, personal_paths
from infrastructure.config import get_settings
from infrastructure.errors import StoreError

logger = logging.getLogger(__name__)

CIPHER = "AES-256-GCM"
NONCE_BYTES = 12
Path = tuple[str, ...]

# Choose the subject (named, else the stream's first, else the actor), make its key if it has
# none, and index the stream under it; the key as it is now (wrapped_key NULL: forgotten).
_KEY_FOR_WRITE = """
WITH chosen AS (
    SELECT coalesce(%(named)s::text,
                    (SELECT subject_id FROM subject_streams WHERE stream_id = %(stream)s ORDER BY seq LIMIT 1),
                    %(actor)s::text) AS subject_id
), made AS (
    INSERT INTO data_keys (subject_id, key_id, wrapped_key) SELECT subject_id, %(key_id)s, %(wrapped)s FROM chosen
    ON CONFLICT (subject_id) DO NOTHING RETURNING subject_id, key_id, wrapped_key
), indexed AS (
    INSERT INTO subject_streams (subject_id, stream_id) SELECT subject_id, %(stream)s FROM chosen
    ON CONFLICT DO NOTHING
)
SELECT subject_id, key_id, wrapped_key, first FROM made, (
    SELECT (SELECT subject_id FROM subject_streams WHERE stream_id = %(stream)s ORDER BY seq LIMIT 1) AS first) f
UNION ALL
SELECT k.subject_id, k.key_id, k.wrapped_key,
       (SELECT subject_id FROM subject_streams WHERE stream_id = %(stream)s ORDER BY seq LIMIT 1)
FROM data_keys k JOIN chosen USING (subject_id)
"""
# Most entries each write cache holds before it starts again.
WRITE_CACHE_SIZE = 100_000
# The keys a read names, as they are now: a destroyed one is missing or NULL.
_KEYS_FOR_READ = "SELECT key_id, wrapped_key FROM data_keys WHERE key_id = ANY(%s)"


class WriteKeyUnknown(Exception):
    """A personal write with no connection, for a subject whose key this process has not cached yet."""


class MasterKeyMissing(StoreError):
    """Personal fields were to be stored or read, and CHRONICLE_MASTER_KEY is not set (503)."""

    code = "master_key_missing"
    http_status = 503


def new_master_key() -> str:
    """A fresh master key as the setting takes it: base64 of 32 random bytes."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def is_envelope(value: Any) -> bool:
    """Whether a stored value is an encrypted personal value."""
    return type(value) is dict and value.get("cipher") == CIPHER and "ciphertext" in value


class Keyring:
    """Wraps and unwraps data keys with the master key; encrypts and decrypts personal values.

    Unwrapped keys are cached by key id and wrapped bytes, but every read asks the database
    which of its keys still exist, so a key destroyed by any process is never used again.
    Writes cache what never changes once committed (a stream's first subject, a stream indexed
    under a subject) and each subject's key: a key destroyed meanwhile only makes what is
    written for that forgotten subject unreadable, as forgetting promises.
    """

    def __init__(self, master_key: str | None) -> None:
        self._master = AESGCM(_decode_master(master_key)) if master_key else None
        self._unwrapped: dict[UUID, tuple[bytes, AESGCM]] = {}
        self._first_subject: dict[str, str] = {}
        self._indexed: set[tuple[str, str]] = set()
        self._write_keys: dict[str, tuple[UUID, AESGCM | None]] = {}

    # -- writing -----------------------------------------------------------------------------

    def conceal(self, conn: psycopg.Connection | None, payload: dict[str, Any], paths: Sequence[Path], *,
                stream_id: str, named: str | None, actor: str | None, event_id: UUID | None = None) -> bool:
        """Encrypt the payload's personal values in place; False if it holds none (nothing written).

        The subject is the one named, else the stream's first subject, else the actor. A forgotten
        subject's values are stored erased. The nonce is derived from the event id when given,
        so a retried append stores the same text. Without a connection (`conn` None) only a
        cached key serves, else WriteKeyUnknown.
        """
        found = [(path, value) for path, value in _values(payload, paths) if value is not None]
        if not found:
            return False
        subject, key_id, key = self._key_for_write(conn, stream_id, named, actor or ANONYMOUS_SUBJECT)
        # What every value of this write shares: the key id as text and as associated data.
        key_text, aad, event_bytes = str(key_id), key_id.bytes, event_id.bytes if event_id is not None else None
        for path, value in found:
            kind = "text" if isinstance(value, str) else "json"
            if key is None:
                _put(payload, path, erased(kind))
                continue
            plain = value.encode("utf-8") if kind == "text" else to_json(value)
            nonce = _nonce_of(event_bytes, path)
            _put(payload, path, {
                "cipher": CIPHER, "subject": subject, "key_id": key_text, "kind": kind,
                "nonce": _b64(nonce), "ciphertext": _b64(key.encrypt(nonce, plain, aad)),
            })
        return True

    def _key_for_write(self, conn: psycopg.Connection | None, stream_id: str, named: str | None,
                       actor: str) -> tuple[str, UUID, AESGCM | None]:
        """The subject, key id and key (None: forgotten) personal values of this write use."""
        subject = named or self._first_subject.get(stream_id)
        if subject is not None and (subject, stream_id) in self._indexed and subject in self._write_keys:
            return (subject, *self._write_keys[subject])
        if conn is None:
            raise WriteKeyUnknown(stream_id)
        # Cache only what a committed statement wrote: on an autocommit connection, idle now.
        committed = conn.autocommit and conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        found = self._ask_key_for_write(conn, stream_id, named, actor)
        if committed:
            self._remember_write(stream_id, *found)
        return found[:3]

    def _remember_write(self, stream_id: str, subject: str, key_id: UUID, key: AESGCM | None,
                        first: str | None) -> None:
        if len(self._indexed) >= WRITE_CACHE_SIZE:
            self._indexed.clear()
            self._first_subject.clear()
            self._write_keys.clear()
        self._indexed.add((subject, stream_id))
        self._write_keys[subject] = (key_id, key)
        if first is not None:
            self._first_subject[stream_id] = first

    def _ask_key_for_write(self, conn: psycopg.Connection, stream_id: str, named: str | None,
                           actor: str) -> tuple[str, UUID, AESGCM | None, str | None]:
        """The subject, key id, key and the stream's first subject, from the database (one statement)."""
        master = self._require()
        key_id = uuid4()
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + master.encrypt(nonce, data_key, key_id.bytes)
        params = {"named": named, "stream": stream_id, "actor": actor, "key_id": key_id, "wrapped": wrapped}
        for _ in range(2):  # a key another session made at this moment is seen on the second try
            with conn.cursor(row_factory=tuple_row) as cur:
                row = cur.execute(_KEY_FOR_WRITE, params).fetchone()
            if row is not None:
                subject, stored_id, stored_wrapped, first = row
                return subject, stored_id, self._unwrap(stored_id, stored_wrapped), first
        raise RuntimeError(f"no data key could be made for the subject of stream {stream_id}")

    # -- reading -----------------------------------------------------------------------------

    def reveal(self, conn: psycopg.Connection, items: Iterable[tuple[dict[str, Any], Sequence[Path]]]) -> None:
        """Decrypt the personal values of many payloads in place, with one key lookup for all.

        A value whose key is destroyed becomes the erased marker of its kind.
        """
        found = [(payload, path, value) for payload, paths in items
                 for path, value in _values(payload, paths) if is_envelope(value)]
        if not found:
            return
        key_ids = {UUID(value["key_id"]) for _, _, value in found}
        with conn.cursor(row_factory=tuple_row) as cur:
            rows = cur.execute(_KEYS_FOR_READ, (list(key_ids),)).fetchall()
        keys = {key_id: self._unwrap(key_id, wrapped) for key_id, wrapped in rows}
        for payload, path, value in found:
            key_id = UUID(value["key_id"])
            _put(payload, path, _decrypt(keys.get(key_id), key_id, value))

    # -- keys --------------------------------------------------------------------------------

    def _require(self) -> AESGCM:
        if self._master is None:
            raise MasterKeyMissing(
                "CHRONICLE_MASTER_KEY is not set: personal fields cannot be stored or read"
                " (`chronicle up` makes one in its data folder; see README, Settings)"
            )
        return self._master

    def _unwrap(self, key_id: UUID, wrapped: bytes | None) -> AESGCM | None:
        """The data key of `key_id` from its wrapped bytes (None: destroyed), cached."""
        if wrapped is None:
            self._unwrapped.pop(key_id, None)
            return None
        wrapped = bytes(wrapped)
        cached = self._unwrapped.get(key_id)
        if cached is not None and cached[0] == wrapped:
            return cached[1]
        key = AESGCM(self._require().decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.bytes))
        if len(self._unwrapped) >= 10_000:
            self._unwrapped.clear()
        self._unwrapped[key_id] = (wrapped, key)
        return key


@lru_cache(maxsize=1)
def keyring() -> Keyring:
    """The process's keyring, with the master key of the settings."""
    return Keyring(get_settings().chronicle_master_key)


def subject_of(metadata: Any) -> tuple[str | None, str | None]:
    """The subject an append's metadata names, and its actor (EventMetadata or a mapping)."""
    if metadata is None:
        return None, None
    if isinstance(metadata, Mapping):
        return metadata.get("subject_id"), metadata.get("actor_id")
    return getattr(metadata, "subject_id", None), getattr(metadata, "actor_id", None)


def _decrypt(key: AESGCM | None, key_id: UUID, value: dict[str, Any]) -> Any:
    """The plaintext of an envelope, or the erased marker if its key is gone or it does not open."""
    kind = value.get("kind", "text")
    if key is None:
        return erased(kind)
    try:
        plain = key.decrypt(base64.b64decode(value["nonce"]), base64.b64decode(value["ciphertext"]), key_id.bytes)
    except (InvalidTag, ValueError, KeyError):
        logger.warning("a personal value under key %s does not decrypt: shown as erased", key_id)
        return erased(kind)
    return plain.decode("utf-8") if kind == "text" else from_json(plain)


def _values(payload: Any, paths: Sequence[Path]) -> Iterable[tuple[Path, Any]]:
    """(path, value) of each path present in the payload."""
    for path in paths:
        node = payload
        for part in path:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            yield path, node


def _put(payload: dict[str, Any], path: Path, value: Any) -> None:
    node = payload
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _nonce_of(event_bytes: bytes | None, path: Path) -> bytes:
    """A nonce unique per (event, field): derived from the event id's bytes, else random."""
    if event_bytes is None:
        return os.urandom(NONCE_BYTES)
    return hashlib.sha256(event_bytes + _path_bytes(path)).digest()[:NONCE_BYTES]


@lru_cache(maxsize=1024)
def _path_bytes(path: Path) -> bytes:
    """A field's path as the nonce derivation spells it: dotted, UTF-8."""
    return ".".join(path).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_master(text: str) -> bytes:
    """The master key's 32 bytes from its base64 text; a clear error if it is not that."""
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError("CHRONICLE_MASTER_KEY must be base64 of 32 bytes,"
                         " e.g. the output of `openssl rand -base64 32`")
    return key


def reveal_payloads(conn: psycopg.Connection, registry: Any, typed: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Decrypt in place the personal fields of (type name, payload) pairs of registered types.

    The one step every reader of events takes after upcasting; no query when none is personal.
    """
    items = []
    for type_name, payload in typed:
        event_type = registry.find(type_name)
        if event_type is not None:
            paths = personal_paths(event_type.model)
            if paths:
                items.append((payload, paths))
    if items:
        keyring().reveal(conn, items)


def conceal_snapshot(conn: psycopg.Connection, stream_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An aggregate snapshot's payload with its state's personal fields encrypted, under the
    stream's subject (snapshots hold the same personal data as the events)."""
    paths = _snapshot_paths(payload.get("topic"))
    if paths:
        keyring().conceal(conn, payload, paths, stream_id=stream_id, named=None, actor=None)
    return payload


def reveal_snapshots(conn: psycopg.Connection, payloads: Sequence[dict[str, Any]]) -> None:
    """Decrypt in place the personal fields of stored snapshot payloads."""
    items = [(payload, paths) for payload in payloads if (paths := _snapshot_paths(payload.get("topic")))]
    if items:
        keyring().reveal(conn, items)


@lru_cache(maxsize=256)
def _snapshot_paths(topic: Any) -> tuple[Path, ...]:
    """The personal paths of a snapshot of the aggregate class `topic`: its `personal_state`."""
    if not isinstance(topic, str):
        return ()
    try:
        aggregate_class = resolve_topic(topic)
    except (TopicError, ImportError, AttributeError, ValueError):
        return ()
    return tuple(("state", name) for name in getattr(aggregate_class, "personal_state", ()))
