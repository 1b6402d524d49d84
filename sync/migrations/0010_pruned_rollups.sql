-- kdelta store schema v10: the rollups of pruned readings, kept with their change.
--
-- When retention prunes a unit (the readings one change holds for one series), the unit's
-- per-minute aggregates — exactly what ingest folded into `rollup_1m` for it — are kept here,
-- keyed by the change, so the change is served with them (`Change::pruned_rollups`) and a
-- peer that receives it later folds them into its own rollups. A received change that
-- carries them is stored with them too, so a relay serves them further. They go with the
-- rollups of their minute (the rollup age, or the disk budget's rollup cut).
--
-- Clustered by (series, minute) for that pruning and for a time correction's recompute of a
-- series' minutes (`correct.rs`); the change index serves the log reader.
CREATE TABLE pruned_rollups (
    series_id   INTEGER NOT NULL,
    minute      INTEGER NOT NULL,  -- unix ms of the minute start
    change_id   INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    total       REAL NOT NULL,
    vmin        REAL NOT NULL,
    vmax        REAL NOT NULL,
    first_ts    INTEGER NOT NULL,
    first_value REAL NOT NULL,
    last_ts     INTEGER NOT NULL,
    last_value  REAL NOT NULL,
    PRIMARY KEY (series_id, minute, change_id)
) WITHOUT ROWID;

CREATE INDEX pruned_rollups_by_change ON pruned_rollups (change_id);
