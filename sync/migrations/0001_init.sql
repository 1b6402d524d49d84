-- kdelta store schema v1. See sync/src/lib.rs for the data model.

-- Key/value facts about this store: actor id, running digest.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Every actor whose changes (or dots) this store knows; max_seq is the version vector.
CREATE TABLE actors (
    idx     INTEGER PRIMARY KEY,
    actor   BLOB NOT NULL UNIQUE,
    max_seq INTEGER NOT NULL DEFAULT 0
);

-- The change log. Readings changes keep only a manifest here (series, time range, count);
-- the readings themselves live once, in `readings`. Document changes live in `doc_versions`.
CREATE TABLE changes (
    id        INTEGER PRIMARY KEY,
    actor_idx INTEGER NOT NULL REFERENCES actors(idx),
    seq       INTEGER NOT NULL,
    hlc       INTEGER NOT NULL,
    kind      INTEGER NOT NULL,  -- 1 = readings, 2 = document write
    manifest  BLOB,
    UNIQUE (actor_idx, seq)
);

CREATE TABLE series (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    unit       TEXT,
    meta       TEXT,               -- JSON object
    -- unit/meta are last-writer-wins by (attr_hlc, attr_actor) so replicas converge
    attr_hlc   INTEGER NOT NULL,
    attr_actor BLOB NOT NULL
);

-- Readings, stored once, clustered by series and time for range scans.
CREATE TABLE readings (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    change_id INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, ts, change_id)
) WITHOUT ROWID;

-- Per-minute rollups maintained at ingest; aggregates with buckets >= 1 min read these.
CREATE TABLE rollup_1m (
    series_id   INTEGER NOT NULL,
    minute      INTEGER NOT NULL,  -- unix ms of the minute start
    n           INTEGER NOT NULL,
    total       REAL NOT NULL,
    vmin        REAL NOT NULL,
    vmax        REAL NOT NULL,
    first_ts    INTEGER NOT NULL,
    first_value REAL NOT NULL,
    last_ts     INTEGER NOT NULL,
    last_value  REAL NOT NULL,
    PRIMARY KEY (series_id, minute)
) WITHOUT ROWID;

CREATE TABLE doc_keys (
    id  INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE
);

-- Every version of every document (value NULL = tombstone).
CREATE TABLE doc_versions (
    change_id INTEGER PRIMARY KEY,
    key_id    INTEGER NOT NULL,
    hlc       INTEGER NOT NULL,
    value     BLOB,
    context   BLOB NOT NULL      -- CBOR list of dots this version supersedes
);
CREATE INDEX doc_versions_by_key ON doc_versions (key_id, hlc);

-- Current siblings of each key (versions no other version supersedes).
CREATE TABLE doc_heads (
    key_id    INTEGER NOT NULL,
    change_id INTEGER NOT NULL,
    PRIMARY KEY (key_id, change_id)
) WITHOUT ROWID;

-- Dots named in some version's context; a version whose dot is here is not a head.
CREATE TABLE doc_superseded (
    key_id    INTEGER NOT NULL,
    actor_idx INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (key_id, actor_idx, seq)
) WITHOUT ROWID;
