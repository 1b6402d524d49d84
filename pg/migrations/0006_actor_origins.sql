-- kdelta hub on PostgreSQL, schema v6: where the hub first received each actor's changes
-- from (the name of the peer whose session brought them; pg/src/origins.rs), so a fork
-- report names both stores that write as one actor. First recorded wins; not replicated,
-- not in the digest.
CREATE TABLE actor_origins (
    actor BYTEA PRIMARY KEY,
    peer TEXT NOT NULL,
    noted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
