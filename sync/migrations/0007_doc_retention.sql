-- kdelta store schema v7: document history retention (sync/src/doc_retention.rs).
-- A version retention pruned keeps its row — change, key, HLC and context (the dots it
-- supersedes, which merges still need) — with its value dropped and `pruned` set. It is never
-- a head: only versions something supersedes are pruned, and a pruned version received from a
-- peer is stored as superseded (the version that superseded it there is on its way).
ALTER TABLE doc_versions ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
-- What a prune pass scans: the versions of a key not pruned yet, oldest first.
CREATE INDEX doc_versions_unpruned ON doc_versions (key_id, hlc) WHERE pruned = 0;
