-- kdelta hub on PostgreSQL, schema v2: what a full sync peer keeps besides the change log
-- (pg/src/peer.rs). The signed log is checked on apply as on SQLite (sync/src/chain.rs):
-- `public_key` is the key bound to an actor by its first signed change stored here (trust on
-- first use, as SQLite's actors.public_key) and `head_hash` the change hash of the actor's
-- last stored change when that one is signed (what its next change must link to). Both move
-- in the apply transaction that holds the actor's row lock. Actors stored before this
-- migration have neither: their next signed change starts their chain here.
ALTER TABLE actors ADD COLUMN public_key BYTEA CHECK (length(public_key) = 32);
ALTER TABLE actors ADD COLUMN head_hash BYTEA CHECK (length(head_hash) = 32);

-- `device` sync credentials, each bound to the actor that first presented it (local facts of
-- the hub, not replicated; SQLite keeps them as `credential_binding/<name>` rows in `meta`).
CREATE TABLE credential_bindings (
    principal TEXT PRIMARY KEY,
    actor     BYTEA NOT NULL CHECK (length(actor) = 16)
);
