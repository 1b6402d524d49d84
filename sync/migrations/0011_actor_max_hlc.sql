-- kdelta store schema v11: each actor's highest stored HLC, kept with its highest seq.
--
-- The clock is seeded at open from the highest HLC stored (`rebase::clock_floor`), and the
-- agent checks at start and while running how far its own changes run ahead of everyone
-- else's (`rebase::lead_of`). Both used to find those by reading every row of the change
-- log (`MAX(hlc)` has no index): ~2 s for 3 million changes on the 2-core VM at each start,
-- far more from an SD card. The writer now keeps `max_hlc` in the actor's row, in the same
-- UPDATE as `max_seq` (the same page, so no extra write), and both read the actors.
--
-- The upgrade reads the log once, per actor through the (actor_idx, seq) index.
ALTER TABLE actors ADD COLUMN max_hlc INTEGER NOT NULL DEFAULT 0;
UPDATE actors SET max_hlc = COALESCE((SELECT MAX(c.hlc) FROM changes c WHERE c.actor_idx = actors.idx), 0);
