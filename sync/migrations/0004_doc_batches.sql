-- kdelta store schema v4: batch documents. One change (kind 5 in `changes`) may write a
-- version of many keys, so a version is identified by (change_id, key_id) instead of by
-- change_id alone. Rows keep their order (the rowid), which is a batch's write order.
CREATE TABLE doc_versions_v3 (
    change_id INTEGER NOT NULL,
    key_id    INTEGER NOT NULL,
    hlc       INTEGER NOT NULL,
    value     BLOB,
    context   BLOB NOT NULL,     -- CBOR list of dots this version supersedes
    PRIMARY KEY (change_id, key_id)
);
INSERT INTO doc_versions_v3 (change_id, key_id, hlc, value, context)
    SELECT change_id, key_id, hlc, value, context FROM doc_versions ORDER BY change_id;
DROP TABLE doc_versions;
ALTER TABLE doc_versions_v3 RENAME TO doc_versions;
CREATE INDEX doc_versions_by_key ON doc_versions (key_id, hlc);
