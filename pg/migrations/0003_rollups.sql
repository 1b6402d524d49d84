-- kdelta hub on PostgreSQL, schema v3: per-minute rollups of the readings, maintained by the
-- apply transactions (pg/src/rollups.rs), and what the readings queries need (pg/src/query.rs).
--
-- One row per series and minute, the columns of the embedded store's `rollup_1m`
-- (sync/migrations/0001_init.sql) with its semantics: `n` readings, `total` their sum held
-- within ±f64::MAX, smallest and largest value, the first reading (earliest time; at equal
-- times the smaller value) and the last (latest time; at equal times the larger value).
-- Unlike SQLite, which folds readings into the row in arrival order, a row here is always
-- recomputed from the readings of its minute, summed in (ts, value) order: a function of the
-- set of readings, so replicas applying pages in different orders store the same total.
CREATE TABLE rollup_1m (
    series_id   BIGINT NOT NULL,
    minute      BIGINT NOT NULL,           -- unix ms of the minute's start
    n           BIGINT NOT NULL,
    total       DOUBLE PRECISION NOT NULL,
    vmin        DOUBLE PRECISION NOT NULL,
    vmax        DOUBLE PRECISION NOT NULL,
    first_ts    BIGINT NOT NULL,
    first_value DOUBLE PRECISION NOT NULL,
    last_ts     BIGINT NOT NULL,
    last_value  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, minute)
);

-- Series pages are in SQLite's order (bytewise UTF-8), whatever the database's collation.
CREATE INDEX series_by_name_bytes ON series (name COLLATE "C");

-- Rollups of the readings already stored (a database of schema v2). Upgrade every replica
-- at once: a replica of an older build applying while this runs would store readings
-- without their rollups. The statement is the one of `rollups.rs`, over every minute.
WITH r AS MATERIALIZED (
    SELECT series_id AS s, ts - (((ts % 60000) + 60000) % 60000) AS m, ts, value FROM readings
), g AS (
    SELECT s, m, count(*) AS n, min(value) AS vmin, max(value) AS vmax,
           min(ts) AS first_ts, max(ts) AS last_ts,
           CASE WHEN max(abs(value)) < (1.7976931348623157e308::float8 / 2) / count(*)
                THEN 1::float8 ELSE power(2::float8, -64) END AS scale
    FROM r GROUP BY s, m
), a AS (
    SELECT g.s, g.m, g.n, g.scale, sum(r.value * g.scale ORDER BY r.ts, r.value) AS scaled,
           g.vmin, g.vmax, g.first_ts, min(r.value) FILTER (WHERE r.ts = g.first_ts) AS first_value,
           g.last_ts, max(r.value) FILTER (WHERE r.ts = g.last_ts) AS last_value
    FROM g JOIN r ON r.s = g.s AND r.m = g.m
    GROUP BY g.s, g.m, g.n, g.scale, g.vmin, g.vmax, g.first_ts, g.last_ts
)
INSERT INTO rollup_1m (series_id, minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value)
SELECT s, m, n,
       CASE WHEN abs(scaled) > 1.7976931348623157e308::float8 * scale
            THEN sign(scaled) * 1.7976931348623157e308::float8 ELSE scaled / scale END,
       vmin, vmax, first_ts, first_value, last_ts, last_value
FROM a;
