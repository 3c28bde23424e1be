"""The log's Merkle trees (infrastructure/log_hashes.py) against RFC 6962's definition, for logs of any size.

Pure functions, no database: these are the checks `chronicle verify-proof` runs offline.
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from infrastructure.log_hashes import audit_path, leaf_hash, merkle_root, node_hash, root_from_path

hashes = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH as RFC 6962 section 2.1 writes it: split at the largest power of two below n."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(rfc6962_root(leaves[:k]), rfc6962_root(leaves[k:]))


def test_leaves_and_nodes_are_domain_separated() -> None:
    event = bytes(range(32))
    assert leaf_hash(event) == hashlib.sha256(b"\x00" + event).digest()
    assert node_hash(event, event) == hashlib.sha256(b"\x01" + event + event).digest()
    assert merkle_root([]) == hashlib.sha256(b"").digest()


@given(hashes)
def test_the_root_is_rfc_6962s(events: list[bytes]) -> None:
    leaves = [leaf_hash(e) for e in events]
    assert merkle_root(leaves) == rfc6962_root(leaves)


@given(hashes, st.data())
def test_every_audit_path_leads_to_the_root_and_only_from_its_leaf(events: list[bytes], data: st.DataObject) -> None:
    leaves = [leaf_hash(e) for e in events]
    root, n = merkle_root(leaves), len(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    path = audit_path(leaves, index)
    assert root_from_path(leaves[index], index, n, path) == root
    # A changed event, another index or a shortened path does not prove inclusion (the size is signed).
    changed = leaf_hash(bytes(32) if events[index] != bytes(32) else b"\x01" * 32)
    assert root_from_path(changed, index, n, path) != root
    other = data.draw(st.integers(0, n - 1).filter(lambda i: leaves[i] != leaves[index] or i == index), label="other")
    if other != index:
        assert root_from_path(leaves[index], other, n, path) != root
    if path:
        assert root_from_path(leaves[index], index, n, path[:-1]) != root
    assert root_from_path(leaves[index], n, n, path) is None
