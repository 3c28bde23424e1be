"""The log's hashes, recomputed in Python: event hashes, Merkle trees, audit paths, seal messages.

Pure functions on bytes, no database: `chronicle verify-proof` runs them offline. The byte
layouts are the ones of schema/0016 (event_hash) and docs/tamper-evidence.md; the Merkle tree
is RFC 6962's (Certificate Transparency): leaf = H(0x00 || event hash), node = H(0x01 || l || r).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from uuid import UUID

ZERO_HASH = bytes(32)
EVENT_TAG = b"chronicle/event/1"
SEAL_TAG = b"chronicle/seal/1"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _field(text: str) -> bytes:
    """A text field's canonical bytes: its UTF-8 length (4 bytes, big-endian), then its bytes."""
    data = text.encode("utf-8")
    return struct.pack(">i", len(data)) + data


def microseconds(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC, as the database hashes a timestamptz."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def event_hash(
    previous: bytes | None, event_id: UUID, stream_id: str, stream_type: str, version: int, type_name: str,
    schema_version: int, payload_text: str, metadata_text: str, recorded_at: datetime,
) -> bytes:
    """sha256 of an event's canonical bytes: the same value schema/0016's event_hash() stores.

    payload_text and metadata_text are the JSON as PostgreSQL prints the stored jsonb.
    """
    data = b"".join((
        EVENT_TAG, previous or ZERO_HASH, event_id.bytes, _field(stream_id), _field(stream_type),
        struct.pack(">q", version), _field(type_name), struct.pack(">i", schema_version),
        _field(payload_text), _field(metadata_text), struct.pack(">q", microseconds(recorded_at)),
    ))
    return hashlib.sha256(data).digest()


def leaf_hash(event: bytes) -> bytes:
    """The Merkle leaf of an event hash: H(0x00 || hash)."""
    return hashlib.sha256(b"\x00" + event).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner Merkle node: H(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 6962 splits a tree."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash of leaf hashes (not event hashes: apply leaf_hash first)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    # Bottom-up, pairing neighbours and carrying an odd last node up: equal to RFC 6962's split.
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The RFC 6962 audit path of leaf `index`: the sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return audit_path(leaves[:k], index) + [merkle_root(leaves[k:])]
    return audit_path(leaves[k:], index - k) + [merkle_root(leaves[:k])]


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root an audit path leads to from `leaf` at `index` in a tree of `size` (RFC 9162 2.1.3.2).

    None when the path cannot belong to such a tree (wrong length, index out of range).
    """
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def seal_message(
    seal_number: int, from_position: int, to_position: int, event_count: int, merkle_root_hash: bytes,
    previous_hash: bytes, sealed_at: datetime,
) -> bytes:
    """The bytes a seal signs; its seal_hash is their sha256, and the next seal names that hash."""
    return b"".join((
        SEAL_TAG, struct.pack(">qqqq", seal_number, from_position, to_position, event_count),
        merkle_root_hash, previous_hash, struct.pack(">q", microseconds(sealed_at)),
    ))
