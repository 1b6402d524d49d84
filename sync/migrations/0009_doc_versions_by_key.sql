-- kdelta store schema v9: document versions clustered by key and time.
--
-- Every document read (get's heads, as-of, history, diff, listings as of a point) asks for
-- the versions of one key in HLC order. Until v8 the table was clustered by change id, so the
-- versions of a key lay one per page, each fetched through an index, and each joined with its
-- change row for its dot (actor, seq): an as-of read of a key with 100 versions touched ~100
-- table pages and ~100 change pages. Now the table is clustered by (key_id, hlc, change_id)
-- and carries its dot (`actor_idx`, `seq`, copies of the change row's, which never change),
-- so the versions of a key are a few adjacent leaf pages read in one range scan.
--
-- `pos` keeps the order of a document batch's versions (kind 5), which was the rowid order:
-- a batch is served with its writes in the order they were written.
--
-- The upgrade copies the table once (as 0004 did); document versions are a small part of a
-- store next to its readings.
CREATE TABLE doc_versions_v9 (
    key_id    INTEGER NOT NULL,
    hlc       INTEGER NOT NULL,
    change_id INTEGER NOT NULL,
    actor_idx INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    pos       INTEGER NOT NULL,   -- order among the versions of one change (batch order)
    pruned    INTEGER NOT NULL DEFAULT 0,
    context   BLOB NOT NULL,      -- CBOR list of dots this version supersedes
    value     BLOB,               -- CBOR; NULL = tombstone, or pruned
    PRIMARY KEY (key_id, hlc, change_id)
) WITHOUT ROWID;
INSERT INTO doc_versions_v9 (key_id, hlc, change_id, actor_idx, seq, pos, pruned, context, value)
    SELECT v.key_id, v.hlc, v.change_id, c.actor_idx, c.seq, v.rowid, v.pruned, v.context, v.value
    FROM doc_versions v JOIN changes c ON c.id = v.change_id;
DROP TABLE doc_versions;
ALTER TABLE doc_versions_v9 RENAME TO doc_versions;
-- The versions of one change (log reads, heads): by change id.
CREATE INDEX doc_versions_by_change ON doc_versions (change_id, key_id);
-- What a retention pass scans (0007).
CREATE INDEX doc_versions_unpruned ON doc_versions (key_id, hlc) WHERE pruned = 0;

-- The heads of a key carry the version's primary key and dot, so a read of the current state
-- goes straight to its versions (no index by change, no change row).
CREATE TABLE doc_heads_v9 (
    key_id    INTEGER NOT NULL,
    hlc       INTEGER NOT NULL,
    change_id INTEGER NOT NULL,
    actor_idx INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (key_id, hlc, change_id)
) WITHOUT ROWID;
INSERT INTO doc_heads_v9 (key_id, hlc, change_id, actor_idx, seq)
    SELECT h.key_id, v.hlc, h.change_id, v.actor_idx, v.seq
    FROM doc_heads h JOIN doc_versions v ON v.change_id = h.change_id AND v.key_id = h.key_id;
DROP TABLE doc_heads;
ALTER TABLE doc_heads_v9 RENAME TO doc_heads;
