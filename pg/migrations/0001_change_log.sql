-- kdelta hub change log on PostgreSQL, schema v1. The data model is the embedded store's
-- (sync/src/lib.rs, sync/migrations/); this is its layout for several hub replicas writing at
-- once. Every table is written only inside `apply` transactions that lock the rows of the
-- actors they touch (pg/src/apply.rs), so concurrent replicas never store a change twice.

-- Facts about the hub: its actor id (shared by every replica).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The hub's hybrid logical clock, shared by its replicas: the last HLC any replica stamped
-- on a change of the hub's own actor (remote HLCs are in `changes`).
CREATE TABLE hub_clock (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    hlc BIGINT NOT NULL
);
INSERT INTO hub_clock (id, hlc) VALUES (1, 0);

-- Every actor whose changes the hub holds. `max_seq` is the version vector; `digest` is the
-- multiset digest of the actor's changes (kdelta_sync::Digest, 32 bytes), updated in the
-- same transaction as max_seq, so the hub's digest is the sum over actors.
CREATE TABLE actors (
    idx     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor   BYTEA NOT NULL UNIQUE CHECK (length(actor) = 16),
    max_seq BIGINT NOT NULL DEFAULT 0,
    digest  BYTEA NOT NULL DEFAULT decode(repeat('00', 32), 'hex') CHECK (length(digest) = 32)
);

-- The change log. Readings changes keep only a manifest (series, unit, metadata, time range,
-- count: CBOR); their readings are stored once, in `readings`. `bytes` is the change's exact
-- encoded size (kdelta_sync::Change::encoded_len), so pages are cut by size without loading
-- bodies. kind: 1 readings, 2 document write, 3 twin change, 4 time correction (its body,
-- CBOR, in `manifest`), 5 document batch, 6 gap record (its body, CBOR, in `manifest`).
-- Seals (the signed log) are kept as received and served untouched: a hub relays them.
CREATE TABLE changes (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_idx BIGINT NOT NULL REFERENCES actors (idx),
    seq       BIGINT NOT NULL,
    hlc       BIGINT NOT NULL,
    kind      SMALLINT NOT NULL,
    bytes     INTEGER NOT NULL,
    manifest  BYTEA,
    seal      BYTEA,                       -- CBOR of the change's seal (signed log), as received
    UNIQUE (actor_idx, seq)
);
CREATE INDEX changes_by_hlc ON changes (hlc);

-- Series by name.
CREATE TABLE series (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Unit and metadata of a series are last-writer-wins by (hlc, actor). Each actor's latest
-- opinion is one row, written only while that actor's row in `actors` is locked, so replicas
-- never contend on a popular series; the winner is the row with the highest (hlc, actor).
CREATE TABLE series_attrs (
    series_id BIGINT NOT NULL,
    actor     BYTEA NOT NULL,
    hlc       BIGINT NOT NULL,
    unit      TEXT,
    meta      TEXT NOT NULL,               -- JSON object
    PRIMARY KEY (series_id, actor)
);

-- Readings, stored once, partitioned by time: one partition per calendar month (UTC) near
-- the present, created on demand (pg/src/partitions.rs); older or far-future readings go to
-- the default partition. The primary key serves range scans by series and time.
CREATE TABLE readings (
    series_id BIGINT NOT NULL,
    ts        BIGINT NOT NULL,             -- unix ms
    change_id BIGINT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, ts, change_id)
) PARTITION BY RANGE (ts);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- Readings changes sampled under an untrusted clock, and their corrections (as on SQLite:
-- sync/migrations/0003_reading_timing.sql).
CREATE TABLE reading_timing (
    change_id    BIGINT PRIMARY KEY,
    boot_id      BYTEA NOT NULL,
    offset_ms    BIGINT NOT NULL,
    delta_ms     BIGINT,
    corrected_by BIGINT
);
CREATE INDEX reading_timing_open ON reading_timing (boot_id, change_id) WHERE delta_ms IS NULL;

CREATE TABLE doc_keys (
    id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key TEXT NOT NULL UNIQUE
);

-- Every version of every document (value NULL = tombstone); `ord` is the write's place in
-- its change (a document batch writes several keys).
CREATE TABLE doc_versions (
    change_id BIGINT NOT NULL,
    ord       INTEGER NOT NULL,
    key_id    BIGINT NOT NULL,
    hlc       BIGINT NOT NULL,
    value     BYTEA,
    context   BYTEA NOT NULL,              -- CBOR list of the dots this version supersedes
    pruned    BOOLEAN NOT NULL DEFAULT false, -- retention dropped the value (it travels so)
    PRIMARY KEY (change_id, ord)
);
CREATE INDEX doc_versions_by_key ON doc_versions (key_id, hlc);

-- Dots named in some version's context. A version whose (key, actor, seq) is here is not a
-- head: the current siblings of a key are its versions not superseded. Insert-only, so
-- replicas applying in any order agree without a read-modify-write.
CREATE TABLE doc_superseded (
    key_id BIGINT NOT NULL,
    actor  BYTEA NOT NULL,
    seq    BIGINT NOT NULL,
    PRIMARY KEY (key_id, actor, seq)
);

-- Every automerge change of every merge document (twin), as received.
CREATE TABLE twin_changes (
    change_id BIGINT PRIMARY KEY,
    key       TEXT NOT NULL,
    hlc       BIGINT NOT NULL,
    bytes     BYTEA NOT NULL
);
CREATE INDEX twin_changes_by_key ON twin_changes (key, change_id);
