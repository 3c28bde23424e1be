"""Seals: signed Merkle tree heads over the log, like Certificate Transparency's signed tree heads.

Each seal covers the events in (previous seal's to_position, safe position], names the previous
seal's hash, and is signed with an Ed25519 key read from the settings. The private key never
enters the database: only its public key and key id are stored with each seal, so a database
login, even a superuser, cannot make a seal that verifies under the operator's key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from infrastructure.config import Settings
from infrastructure.log_hashes import ZERO_HASH, leaf_hash, merkle_root, seal_message

logger = logging.getLogger(__name__)

# One sealer at a time per database: a transaction-level advisory lock, two-int key "CHRN", 2.
SEAL_LOCK = (0x4348524E, 2)
# The most events one seal covers; a longer backlog is sealed in several seals.
MAX_SEAL_EVENTS = 100_000


class SealKeyError(Exception):
    """The configured seal key cannot be read."""


@dataclass(frozen=True)
class Seal:
    """A stored seal, as the seals table holds it."""

    seal_number: int
    from_position: int
    to_position: int
    event_count: int
    merkle_root: bytes
    previous_hash: bytes
    seal_hash: bytes
    key_id: str
    public_key: bytes
    signature: bytes
    sealed_at: datetime

    def message(self) -> bytes:
        """The bytes this seal's signature and seal_hash are over."""
        return seal_message(self.seal_number, self.from_position, self.to_position, self.event_count,
                            self.merkle_root, self.previous_hash, self.sealed_at)


def key_id(public_key: bytes) -> str:
    """A short name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a (private key's) public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8), raw 32 bytes, or the base64 of those 32 bytes."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(text, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SealKeyError("the seal key is not an Ed25519 key")
        return key
    raw = data if len(data) == 32 else None
    if raw is None:
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise SealKeyError("the seal key is neither PEM, 32 raw bytes nor base64 of 32 bytes") from None
    if len(raw) != 32:
        raise SealKeyError(f"an Ed25519 seal key has 32 bytes, not {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_seal_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The key of CHRONICLE_SEAL_KEY (base64) or CHRONICLE_SEAL_KEY_FILE; None if neither is set."""
    if settings.chronicle_seal_key:
        return parse_private_key(settings.chronicle_seal_key.encode())
    if settings.chronicle_seal_key_file:
        try:
            return parse_private_key(Path(settings.chronicle_seal_key_file).read_bytes())
        except OSError as exc:
            raise SealKeyError(f"cannot read the seal key {settings.chronicle_seal_key_file}: {exc.strerror}") from None
    return None


def new_key_text() -> str:
    """A new Ed25519 private key as base64 of its raw 32 bytes (what CHRONICLE_SEAL_KEY takes)."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


def ensure_key_file(path: Path) -> Path:
    """Make a new seal key at `path` (readable by its owner only) unless one is there; return it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(new_key_text() + "\n")
    return path


def signature_holds(seal: Seal) -> bool:
    """Whether the seal's signature is valid for its message under the public key it names."""
    try:
        Ed25519PublicKey.from_public_bytes(seal.public_key).verify(seal.signature, seal.message())
        return True
    except (InvalidSignature, ValueError):
        return False


SEAL_COLUMNS = ("seal_number, from_position, to_position, event_count, merkle_root, previous_hash, seal_hash,"
                " key_id, public_key, signature, sealed_at")


def last_seal(conn: psycopg.Connection) -> Seal | None:
    """The newest seal, or None before the first."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {SEAL_COLUMNS} FROM seals ORDER BY seal_number DESC LIMIT 1").fetchone()
    return seal_of(row) if row else None


def seal_of(row: dict) -> Seal:
    """A Seal from a row of the seals table (bytea columns as bytes)."""
    return Seal(**{name: bytes(value) if isinstance(value, memoryview) else value for name, value in row.items()})


def seal_log(pool: ConnectionPool, key: Ed25519PrivateKey) -> list[Seal]:
    """Seal the log up to the safe position; return the new seals (none when nothing is new).

    Safe with several sealers at once: one holds the lock, the others find nothing to do.
    """
    made: list[Seal] = []
    while True:
        with pool.connection() as conn, conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS got", SEAL_LOCK).fetchone()["got"]:
                return made
            seal = _seal_next(conn, key)
        if seal is None:
            return made
        logger.info("sealed positions %s-%s (%s events) as seal %s", seal.from_position + 1, seal.to_position,
                    seal.event_count, seal.seal_number)
        made.append(seal)


def _seal_next(conn: psycopg.Connection, key: Ed25519PrivateKey) -> Seal | None:
    """Sign and store the next seal over up to MAX_SEAL_EVENTS events past the last seal."""
    previous = last_seal(conn)
    after = previous.to_position if previous else 0
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT position, hash FROM events WHERE position > %s AND position <= safe_position()"
            " ORDER BY position LIMIT %s",
            (after, MAX_SEAL_EVENTS),
        ).fetchall()
    if not rows:
        return None
    public = public_bytes(key)
    unsigned = Seal(
        seal_number=(previous.seal_number + 1) if previous else 1, from_position=after,
        to_position=rows[-1]["position"], event_count=len(rows),
        merkle_root=merkle_root([leaf_hash(bytes(row["hash"])) for row in rows]),
        previous_hash=previous.seal_hash if previous else ZERO_HASH, seal_hash=b"", key_id=key_id(public),
        public_key=public, signature=b"",
        # Whole microseconds, as timestamptz stores them, so the signed message reads back the same.
        sealed_at=datetime.now(timezone.utc),
    )
    message = unsigned.message()
    seal = Seal(**{**unsigned.__dict__, "seal_hash": hashlib.sha256(message).digest(), "signature": key.sign(message)})
    conn.execute(
        f"INSERT INTO seals ({SEAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (seal.seal_number, seal.from_position, seal.to_position, seal.event_count, seal.merkle_root,
         seal.previous_hash, seal.seal_hash, seal.key_id, seal.public_key, seal.signature, seal.sealed_at),
    )
    return seal
