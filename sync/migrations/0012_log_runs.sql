-- kdelta store schema v12: log runs. See sync/src/log_runs.rs.
--
-- Retention prunes readings, never change rows: a change whose readings (and their rollups)
-- all went stays as a row of ~200 B so version vectors stay dense and peers can ask for it.
-- A run of such changes of one actor, seqs a..b, is compacted to its last row: rows a..b-1
-- are deleted and row b keeps `run_from = a`. Row b's seal still links to the hash of
-- change b-1 and its signature still verifies; what was in a..b-1 (nothing but pruned
-- readings) is taken on trust. Peers that lack seqs of a run are served row b with
-- `Seal::run_from` (sessions negotiate the `log_runs` feature). NULL on every other row.
ALTER TABLE changes ADD COLUMN run_from INTEGER;
