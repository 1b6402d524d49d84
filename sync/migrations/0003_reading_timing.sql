-- kdelta store schema v3: readings sampled under an untrusted clock, and their corrections.
-- See sync/src/timing.rs.

-- One row per readings change (kind 1) that carries a timing record. `delta_ms` and
-- `corrected_by` are set when a time correction (kind 4 in `changes`, its body CBOR in
-- `changes.manifest`) moved the change's readings; the change itself keeps the original times.
CREATE TABLE reading_timing (
    change_id    INTEGER PRIMARY KEY,      -- = changes.id of the readings change
    boot_id      BLOB NOT NULL,
    offset_ms    INTEGER NOT NULL,         -- wall clock minus monotonic clock when sampled
    delta_ms     INTEGER,                  -- NULL until corrected: ms added to every reading
    corrected_by INTEGER                   -- changes.id of the correction
);
CREATE INDEX reading_timing_open ON reading_timing (boot_id, change_id) WHERE delta_ms IS NULL;
