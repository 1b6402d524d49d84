-- kdelta store schema v2: merge documents (device twins, automerge). See sync/src/twin/.

-- One row per merge-document key. `json` is the materialized merged value after every
-- committed change (plain reads are one row); `snapshot` is `Automerge::save()` covering every
-- twin change with a local id up to `snapshot_upto`, so loading never replays the whole log.
CREATE TABLE twins (
    id            INTEGER PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,
    json          BLOB NOT NULL,           -- CBOR of the merged JSON value
    changes       INTEGER NOT NULL DEFAULT 0,
    snapshot      BLOB,
    snapshot_upto INTEGER NOT NULL DEFAULT 0
);

-- Every automerge change of every twin, as received (kind 3 in `changes`).
CREATE TABLE twin_changes (
    change_id INTEGER PRIMARY KEY,         -- = changes.id
    twin_id   INTEGER NOT NULL,
    hlc       INTEGER NOT NULL,
    hash      BLOB NOT NULL,               -- automerge change hash (32 bytes)
    bytes     BLOB NOT NULL                -- raw automerge change chunk
);
CREATE INDEX twin_changes_by_twin ON twin_changes (twin_id, change_id);
CREATE INDEX twin_changes_by_time ON twin_changes (twin_id, hlc);
