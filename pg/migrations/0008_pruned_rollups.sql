-- kdelta hub on PostgreSQL, schema v8: the rollups of pruned readings, kept with their change
-- (the embedded store's table of the same name, sync/migrations/0010_pruned_rollups.sql).
--
-- When retention prunes a unit (the readings one change holds for one series), the unit's
-- per-minute aggregates are kept here, keyed by the change, so the change is served with them
-- (`Change::pruned_rollups`) and a replica that receives it later folds them into its own
-- rollups. A received change that carries them is stored with them too (and they are folded
-- into its actor's `rollup_1m` rows by the apply transaction), so the hub relays them further.
-- They go with the rollups of their minute (the rollup age). Written under the change's actor
-- lock, like the change's other rows.
CREATE TABLE pruned_rollups (
    series_id   BIGINT NOT NULL,
    minute      BIGINT NOT NULL,           -- unix ms of the minute's start
    change_id   BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    total       DOUBLE PRECISION NOT NULL,
    vmin        DOUBLE PRECISION NOT NULL,
    vmax        DOUBLE PRECISION NOT NULL,
    first_ts    BIGINT NOT NULL,
    first_value DOUBLE PRECISION NOT NULL,
    last_ts     BIGINT NOT NULL,
    last_value  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, minute, change_id)
);
CREATE INDEX pruned_rollups_by_change ON pruned_rollups (change_id);
