"""Retention: old document versions' bodies leave the read model; the log keeps everything.

A body goes once every version that shows it is older than the retention age, none of them is
its document's latest version or carries a live tag (of a live or a deleted document), and the
document does not show it now. The version rows stay (their headers are history); reading a
pruned version's body falls back to the log (GET /v1/documents/{id}/versions/{v}), as time
travel (GET /v1/documents/{id}/history?version=) always reads the log. Pruned bodies are listed
in document_body_pruned, so `chronicle verify` does not count them as missing. Off unless
CHRONICLE_VERSION_RETENTION_DAYS is set; run by the worker's tick or `chronicle prune`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from psycopg_pool import ConnectionPool

# Versions read per statement, in key order: a prune never holds a long transaction.
PRUNE_BATCH = 2000

# One batch of versions by key; of the bodies its old versions show, delete those no version
# that keeps its body shows (document_version_body_idx finds every version of a body).
PRUNE_SQL = """
WITH batch AS (
    SELECT v.document_id, v.version, v.body_hash, v.created_at FROM document_version v
    WHERE (v.document_id, v.version) > (%(after_id)s, %(after_version)s)
    ORDER BY v.document_id, v.version LIMIT %(batch)s
), hashes AS (
    SELECT DISTINCT b.body_hash FROM batch b WHERE b.created_at < %(cutoff)s
), kept AS (
    SELECT DISTINCT v.body_hash FROM hashes h JOIN document_version v ON v.body_hash = h.body_hash
    WHERE v.created_at >= %(cutoff)s
       OR v.version = (SELECT max(x.version) FROM document_version x WHERE x.document_id = v.document_id)
       OR EXISTS (SELECT 1 FROM active_tag t WHERE t.document_id = v.document_id AND t.document_version = v.version)
       OR EXISTS (SELECT 1 FROM document d WHERE d.document_id = v.document_id AND d.body_hash = v.body_hash)
       OR EXISTS (SELECT 1 FROM document_tombstone s WHERE s.document_id = v.document_id
                  AND (s.state->'document'->>'body_hash' = v.body_hash
                       OR s.state->'tags' @> jsonb_build_array(jsonb_build_object('document_version', v.version))))
), gone AS (
    DELETE FROM document_body b USING hashes h
    WHERE b.body_hash = h.body_hash AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.body_hash = h.body_hash)
    RETURNING b.body_hash
), noted AS (
    INSERT INTO document_body_pruned (body_hash) SELECT body_hash FROM gone ON CONFLICT DO NOTHING
)
SELECT (SELECT count(*) FROM gone) AS pruned,
       (SELECT count(*) FROM batch) AS read,
       (SELECT document_id FROM batch ORDER BY document_id DESC, version DESC LIMIT 1) AS last_id,
       (SELECT version FROM batch ORDER BY document_id DESC, version DESC LIMIT 1) AS last_version
"""


@dataclass(frozen=True)
class PruneResult:
    """What a prune did: versions read, bodies removed, and the age cut-off it used."""

    versions_read: int
    bodies_pruned: int
    cutoff: datetime


def prune_versions(pool: ConnectionPool, days: float, *, batch: int = PRUNE_BATCH) -> PruneResult:
    """Remove the bodies of document versions older than `days`, except tagged ones and the latest.

    Walks document_version in key order, one short transaction per batch.
    """
    if days <= 0:
        raise ValueError("the retention age must be positive")
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    after_id, after_version, read, pruned = "", 0, 0, 0
    with pool.connection() as conn:
        while True:
            with conn.transaction():
                row = conn.execute(PRUNE_SQL, {"after_id": after_id, "after_version": after_version,
                                               "batch": batch, "cutoff": cutoff}).fetchone()
            read, pruned = read + row["read"], pruned + row["pruned"]
            if row["read"] < batch:
                return PruneResult(read, pruned, cutoff)
            after_id, after_version = row["last_id"], row["last_version"]
