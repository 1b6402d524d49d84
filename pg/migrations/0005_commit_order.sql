-- kdelta hub on PostgreSQL, schema v5: the change log in commit order, for cursors that
-- follow it (a hub's MQTT outbox; pg/src/log.rs).
--
-- `changes.id` is issued when a row is inserted, not when its transaction commits: two
-- replicas' transactions commit out of id order, so a cursor over ids would pass a change
-- that becomes visible later with a lower id. Each row records the id of the transaction
-- that wrote it (`pg_current_xact_id()`, one per transaction, 64 bits with its epoch).
-- Every transaction below the current snapshot's xmin has ended, so the rows with
-- `commit_xid < xmin` are a final set that only grows above it: ordered by
-- (commit_xid, id), they form a log whose positions never move (pg/src/log.rs).
--
-- Rows written before this schema get 0 and are not part of that log (a hub's MQTT outbox
-- starts at the end of the log, or at its first change of schema 5 with `backfill`).
ALTER TABLE changes ADD COLUMN commit_xid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE changes ALTER COLUMN commit_xid SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX changes_by_commit ON changes (commit_xid, id) WHERE commit_xid > 0;

-- Named cursors over that log, shared by the replicas (the MQTT outbox: `acked`, every
-- change up to it published and confirmed; `sent`, messages up to it may have been sent).
CREATE TABLE log_cursors (
    name  TEXT PRIMARY KEY,
    acked BIGINT NOT NULL,
    sent  BIGINT NOT NULL,
    CHECK (acked >= 0 AND sent >= acked)
);

-- Gap records (kind 6) listed by `GET /v1/readings/gaps` without scanning every change.
CREATE INDEX changes_gaps ON changes (id) WHERE kind = 6;
