"""The log's proofs for auditors: an event's inclusion proof in a signed seal, and the seals.

A proof is checked offline by `chronicle verify-proof FILE` (docs/tamper-evidence.md).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field

from api.deps import Auditor, ChronicleState, chronicle, decode_cursor, encode_cursor, page_of, page_size
from api.problems import Problem
from api.schemas import ExactRoute, Out
from infrastructure.log_proofs import NotSealedYet, inclusion_proof, seal_json
from infrastructure.log_segments import ArchivedRange, archived_at, archived_segments, check_feed_from
from infrastructure.seals import SEAL_COLUMNS, seal_of
from service_layer import event_log

router = APIRouter(prefix="/v1", tags=["audit"], route_class=ExactRoute)


class SealOut(Out):
    """A signed Merkle tree head over the events in (from_position, to_position]; bytes as hex."""

    seal_number: int
    from_position: int = Field(description="exclusive: the previous seal's to_position")
    to_position: int
    event_count: int
    merkle_root: str
    previous_hash: str = Field(description="the previous seal's seal_hash (zeros for the first)")
    seal_hash: str = Field(description="sha256 of the signed message")
    key_id: str
    public_key: str = Field(description="Ed25519 public key, raw 32 bytes as hex")
    signature: str
    sealed_at: str


class SealPage(Out):
    seals: list[SealOut]
    next_cursor: str | None = None


class ArchiveOut(Out):
    """An archived range of the log: a segment that lives in files (docs/log-segments.md)."""

    segment: str
    first_position: int
    last_position: int
    archived_at: str
    archive: str = Field(description="the archive's manifest file name")
    event_count: int
    data_sha256: str = Field(description="sha256 of the archive's data file (gzip NDJSON), hex")
    first_hash: str | None = None
    last_hash: str | None = None


class ArchivePage(Out):
    archives: list[ArchiveOut]


def archived_problem(exc: ArchivedRange, field: str) -> Problem:
    """410 naming the archive that holds what was asked for: the positions are not lost, they are
    in those files (or back after `chronicle archive restore`)."""
    return Problem(410, "log_archived", str(exc), field=field, archive=exc.segment.as_json())


def log_page(pool: Any, log: Any, filters: Any, after: int, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the audit log and its cursor (event_log.event_page): 410 naming the archive when
    the page would start in an archived range; a page that stopped before one points its cursor
    at the range, so the next page answers that 410 and no page passes over archived events."""
    try:
        rows, stop = event_log.event_page(pool, log, filters, after, limit)
    except ArchivedRange as exc:
        raise archived_problem(exc, "cursor") from None
    rows, next_cursor = page_of(rows, limit, "position")
    if stop is not None and next_cursor is None:
        next_cursor = encode_cursor(stop)
    return rows, next_cursor


def check_feed_start(pool: Any, start: int) -> None:
    """410 when a feed from `start` would pass through an archived range it cannot deliver: the
    problem names the archive; a feed may start after its last position."""
    with pool.connection() as conn:
        try:
            check_feed_from(conn, start)
        except ArchivedRange as exc:
            raise archived_problem(exc, "after") from None


def check_stream_page(conn: Any, after: int, events: list[dict[str, Any]], last: int) -> None:
    """410 when a stream's page read after version `after` misses versions up to `last` (at most
    the page) that an archived segment holds: a stream's history never silently skips them."""
    expected, before = after + 1, 0
    for event in [*events, None]:
        version = last + 1 if event is None else min(event["stream_version"], last + 1)
        if version > expected:  # versions expected..version-1 are not in the log's attached segments
            beyond = None if event is None else event["position"]
            for segment in archived_segments(conn):
                if segment.end_position > before and (beyond is None or segment.first_position < beyond):
                    raise archived_problem(ArchivedRange(segment), "from_version")
            return
        if event is None or version > last:
            return
        expected, before = version + 1, event["position"]


def missing_event_problem(conn: Any, event_id: UUID) -> Problem:
    """An event not in the log: 410 naming its archive if it was archived, else 404; its id stays
    in log_event_ids, which says where it was."""
    claimed = conn.execute("SELECT position FROM log_event_ids WHERE event_id = %s", (event_id,)).fetchone()
    if claimed is not None:
        segment, _ = archived_at(conn, claimed["position"] - 1)
        if segment is not None:
            return archived_problem(ArchivedRange(segment), "event_id")
    return Problem(404, "event_not_found", f"no event {event_id}", field="event_id")


class ProvenEvent(Out):
    """The event and every input of its hash, exactly as hashed."""

    position: int
    event_id: str
    stream_id: str
    stream_type: str
    version: int
    type: str
    schema_version: int
    payload_text: str = Field(description="the payload as PostgreSQL prints the stored jsonb")
    metadata_text: str
    recorded_at: str
    previous_hash: str | None = Field(description="hash of the previous event of the stream; null at version 1")
    hash: str


class ProofOut(Out):
    """An inclusion proof: the event's leaf and audit path lead to the seal's signed Merkle root."""

    event: ProvenEvent
    seal: SealOut
    leaf_index: int = Field(description="the event's index among the seal's events (position order)")
    audit_path: list[str] = Field(description="RFC 6962 audit path, leaf to root, hex")


@router.get("/events/{event_id}/proof", summary="An event's inclusion proof in a signed seal",
            responses={404: {"description": "no such event"},
                       410: {"description": "the event's segment of the log is archived; the problem names the archive"},
                       409: {"description": "the event is not sealed yet; try again after the next seal"}})
def event_proof(
    event_id: UUID = Path(..., description="the event's id"),
    state: ChronicleState = Depends(chronicle),
    _: Any = Auditor,
) -> ProofOut:
    """The event, its hash inputs, the seal that covers it and its audit path.

    Check it offline with `chronicle verify-proof FILE` (docs/tamper-evidence.md).
    """
    with state.pool.connection() as conn:
        try:
            proof = inclusion_proof(conn, event_id)
        except NotSealedYet as exc:
            raise Problem(409, "not_sealed_yet", str(exc), field="event_id") from None
        except ArchivedRange as exc:  # its seal or its previous hash reaches into an archive
            raise archived_problem(exc, "event_id") from None
        if proof is None:
            raise missing_event_problem(conn, event_id)
    return proof


@router.get("/log/seals", summary="The log's seals, oldest first")
def list_seals(
    state: ChronicleState = Depends(chronicle),
    _: Any = Auditor,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
) -> SealPage:
    """Every seal: its range, Merkle root, chain link, key and signature, a page at a time."""
    after = (decode_cursor(cursor, (int,)) or (0,))[0]
    with state.pool.connection() as conn:
        rows = conn.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE seal_number > %s ORDER BY seal_number LIMIT %s",
                            (after, limit + 1)).fetchall()
    rows, next_cursor = page_of(rows, limit, "seal_number")
    return {"seals": [seal_json(seal_of(row)) for row in rows], "next_cursor": next_cursor}


@router.get("/log/archives", summary="The log's archived ranges")
def list_archives(state: ChronicleState = Depends(chronicle), _: Any = Auditor) -> ArchivePage:
    """Every archived segment: its positions, when, its files' names, count, sha256 and first and
    last hashes. Reads of those positions answer 410 naming the archive (docs/log-segments.md)."""
    with state.pool.connection() as conn:
        return {"archives": [s.as_json() for s in archived_segments(conn)]}
