-- 0013: drop the projection indexes no query reads through; each costs a write per event.
-- Every read of these tables (api/routes_reads.py, projections/) and what serves it:
--   edge:             SELECT ... WHERE chain_id = $1 ORDER BY edge_id (get_chain), and the
--                     projection's load and DELETE ... WHERE chain_id = ANY($1) -> edge_pkey
--   document_version: WHERE document_id = $1 AND version > $2 ORDER BY version (list_versions),
--                     WHERE document_id = $1 AND version = $2 (get_version), the tag join
--                     ON document_id = ... AND version = ... (list_documents ?tag=), and the
--                     projection's INSERT ... ON CONFLICT (document_id, version)
--                                                                        -> document_version_pkey
--   tag_event:        WHERE document_id = $1 [AND tag = $2] ORDER BY last_position
--                     (document_tags)                       -> tag_event_document_tag_idx
--                     the projection's INSERT ... ON CONFLICT (event_id, tag) -> tag_event_pkey
-- No query filters edges by source or target, versions by namespace/type, session, creation
-- time or metadata, or tag moves by tag alone or by time; the indexes below served none.
DROP INDEX IF EXISTS edge_source_idx;
DROP INDEX IF EXISTS edge_target_idx;
DROP INDEX IF EXISTS document_version_ns_type_idx;
DROP INDEX IF EXISTS document_version_session_idx;
DROP INDEX IF EXISTS document_version_created_at_idx;
DROP INDEX IF EXISTS document_version_metadata_idx;
DROP INDEX IF EXISTS tag_event_tag_idx;
DROP INDEX IF EXISTS tag_event_created_at_idx;
