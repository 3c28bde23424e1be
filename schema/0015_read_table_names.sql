-- 0015: the read tables take their domain names. "Snapshot" now means only an aggregate's
-- snapshot (the eventsourcing library's), never a read table: chain_snapshot, document_snapshot
-- and agent_snapshot become chain, document and agent, with their keys, indexes and checks.
-- Grants follow a renamed table.
ALTER TABLE chain_snapshot RENAME TO chain;
ALTER TABLE chain RENAME CONSTRAINT chain_snapshot_pkey TO chain_pkey;
ALTER INDEX chain_snapshot_name_idx RENAME TO chain_name_idx;
ALTER INDEX chain_snapshot_metadata_idx RENAME TO chain_metadata_idx;

ALTER TABLE document_snapshot RENAME TO document;
ALTER TABLE document RENAME CONSTRAINT document_snapshot_pkey TO document_pkey;
ALTER TABLE document RENAME CONSTRAINT document_snapshot_version_check TO document_version_check;
ALTER INDEX document_snapshot_ns_type_idx RENAME TO document_ns_type_idx;
ALTER INDEX document_snapshot_type_idx RENAME TO document_type_idx;
ALTER INDEX document_snapshot_session_idx RENAME TO document_session_idx;
ALTER INDEX document_snapshot_metadata_idx RENAME TO document_metadata_idx;

ALTER TABLE agent_snapshot RENAME TO agent;
ALTER TABLE agent RENAME CONSTRAINT agent_snapshot_pkey TO agent_pkey;
ALTER INDEX agent_snapshot_name_idx RENAME TO agent_name_idx;
ALTER INDEX agent_snapshot_metadata_idx RENAME TO agent_metadata_idx;
