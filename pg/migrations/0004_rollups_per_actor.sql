-- kdelta hub on PostgreSQL, schema v4: a rollup row per (series, minute, actor), folded by
-- the apply transaction that already holds the actor's row lock (pg/src/rollups.rs), so
-- devices writing one series name in the same minute no longer wait for each other's rows,
-- and an apply never reads back readings it did not write. The queries merge the rows of a
-- minute across actors (pg/src/query.rs).
--
-- An actor's row is its readings of that minute folded one by one in (seq, ts) order: `n`,
-- the total as a sequence of additions each held within ±f64::MAX (kdelta_saturating_sum,
-- below; `saturating_sum` in Rust), min, max, first (earliest; at equal times the smaller
-- value) and last (latest; at equal times the larger value). A function of the actor's
-- readings, whichever replica applied them.
--
-- `actor_idx` 0 holds what the rows of schema v3 held for minutes that have no readings
-- left (pruned by retention, which keeps rollups longer than raw readings): they cannot be
-- split by actor and stay as they were.

-- `a + b` held within ±f64::MAX, without PostgreSQL's overflow error: halving is exact, so
-- `a/2 + b/2` leaves ±MAX/2 exactly when `a + b` would leave ±MAX (Rust: `saturating_sum`).
CREATE FUNCTION kdelta_saturating_add(a float8, b float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN abs(a / 2 + b / 2) > 1.7976931348623157e308::float8 / 2
                THEN sign(a / 2 + b / 2) * 1.7976931348623157e308::float8
                ELSE a + b END
$$;

-- The sequential saturating sum of its inputs, in the aggregate call's ORDER BY.
CREATE AGGREGATE kdelta_saturating_sum(float8) (
    SFUNC = kdelta_saturating_add,
    STYPE = float8,
    INITCOND = '0'
);

ALTER TABLE rollup_1m ADD COLUMN actor_idx BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m DROP CONSTRAINT rollup_1m_pkey;
ALTER TABLE rollup_1m ADD PRIMARY KEY (series_id, minute, actor_idx);

-- The minutes that still have readings are rebuilt per actor (the statement of
-- `rollups.rs`'s recompute, over every minute); the others keep their row as actor 0.
CREATE TEMPORARY TABLE rollup_rebuilt ON COMMIT DROP AS
WITH r AS MATERIALIZED (
    SELECT r.series_id AS s, r.ts - (((r.ts % 60000) + 60000) % 60000) AS m, c.actor_idx AS a,
           c.seq, r.ts, r.value
    FROM readings r JOIN changes c ON c.id = r.change_id
), g AS (
    SELECT s, m, a, count(*) AS n, kdelta_saturating_sum(value ORDER BY seq, ts) AS total,
           min(value) AS vmin, max(value) AS vmax, min(ts) AS first_ts, max(ts) AS last_ts
    FROM r GROUP BY s, m, a
)
SELECT g.s, g.m, g.a, g.n, g.total, g.vmin, g.vmax,
       g.first_ts, min(r.value) FILTER (WHERE r.ts = g.first_ts) AS first_value,
       g.last_ts, max(r.value) FILTER (WHERE r.ts = g.last_ts) AS last_value
FROM g JOIN r ON r.s = g.s AND r.m = g.m AND r.a = g.a
GROUP BY g.s, g.m, g.a, g.n, g.total, g.vmin, g.vmax, g.first_ts, g.last_ts;

DELETE FROM rollup_1m o USING (SELECT DISTINCT s, m FROM rollup_rebuilt) k
WHERE o.series_id = k.s AND o.minute = k.m;

INSERT INTO rollup_1m (series_id, minute, actor_idx, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value)
SELECT s, m, a, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value FROM rollup_rebuilt;
