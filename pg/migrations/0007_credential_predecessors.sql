-- kdelta hub on PostgreSQL, schema v7: the actors a `device` credential was bound to before
-- its current one (pg/src/succession.rs). A device whose store was stamped in the future
-- rebases its clock: it takes a new actor and sends a succession record signed by the old
-- actor's key; the hub moves the credential's binding on to the new actor and keeps the old
-- one here, whose remaining changes the credential may still send. Local facts of the hub,
-- not replicated (SQLite keeps them as `credential_predecessors/<name>` in `meta`).
CREATE TABLE credential_predecessors (
    principal    TEXT NOT NULL REFERENCES credential_bindings (principal),
    actor        BYTEA NOT NULL CHECK (length(actor) = 16),
    succeeded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, actor)
);
