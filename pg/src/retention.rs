//! Retention on a PostgreSQL hub: raw readings pruned by age (a default and per-series
//! patterns, [`RetentionPolicy`]), per-minute rollups by their own, longer age — the
//! embedded store's rule (`kdelta_sync`'s `retention.rs`), applied with its pure functions
//! ([`readings_cutoff`], [`unit_expired`], [`prune_series`], [`rollups_cutoff`]), so a hub
//! and SQLite replicas under one policy hold the same units and show the same digest.
//! Owns the pass and its locks; document history is `doc_retention.rs`'s, run after the
//! readings under the same lock; twins are not compacted on PostgreSQL.
//!
//! **The unit** is what SQLite prunes: the readings one change holds for one series, once
//! all of them are older than the series' cutoff. Pruning a unit — in one transaction that
//! holds the change's actor row, as an apply does — subtracts its digest element from the
//! actor's digest, drops the series from the change's manifest, adds the unit's hash to the
//! seal's pruned hashes, stores the change's new encoded size, and deletes its rows. The
//! change row stays: version vectors stay dense and `changes_since` serves what remains.
//! Small transactions (`step_rows` readings looked at each), so applies of the same actors
//! wait at most one step.
//!
//! **Whole months.** A month partition of `readings` that ends before the cutoff of every
//! series with rows in it (a `[[retention.series]]` rule that keeps longer, or forever,
//! keeps its partitions while its series have rows there) is not emptied by `DELETE`: its
//! units are marked as above without deleting their rows there, then the partition is
//! detached (a moment's lock on `readings`, bounded by `lock_timeout`; a busy table defers
//! it to the next pass) and dropped — no dead tuples, no vacuum. Rows of the detached table
//! whose change still lists their series (a unit kept whole because it straddles the
//! cutoff, or readings that arrived after their series was looked at) go back into
//! `readings` (the default partition now) before the drop, in the drop's transaction. A
//! detached table left by a pass that stopped halfway is finished by the next one. The
//! default partition and the months that cannot go whole are pruned by `DELETE`.
//!
//! **Rollups** of a minute stay while any raw reading of that series and minute remains
//! and until they are older than the rollup age, as on SQLite; a `readings/aggregate` over
//! a pruned range still answers from them. What the units a step prunes added to the
//! rollups is kept per series, minute and actor with the first change of the minute the
//! step pruned (table `pruned_rollups`, in the step's transaction; `group_pruned_rollups`,
//! the rule SQLite uses) and served with it, so a replica that receives those changes later
//! counts their readings too; they go with their minute's rollups.
//!
//! **Replicas.** One pass at a time for the whole hub: a pass holds a transaction-scoped
//! advisory lock (`pg_try_advisory_xact_lock`) for its duration, and a replica that does
//! not get it skips its turn ([`PgPruneReport::ran`] false). The lock goes with the holding
//! transaction, so a replica that dies mid-pass does not keep it. Marking is idempotent
//! anyway (a unit whose series has left the manifest is not pruned twice).

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;

use kdelta_sync::{
    Digest, PruneReport, PrunedUnitMinutes, RetentionPolicy, decode_manifest,
    encode_manifest_entries, group_pruned_rollups, prune_series, readings_cutoff, rollups_cutoff,
    unit_expired,
};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::codec::encode_seal;
use crate::error::{PgError, Result, sqlstate};
use crate::partitions::{month_start_ms, partition_name};
use crate::read::changes_by_id;
use crate::rollups::{keep_pruned_rollups, minute_of};
use crate::store::PgStore;

/// Times a step is tried again after PostgreSQL aborted it for a conflict with an apply.
pub(crate) const CONFLICT_RETRIES: usize = 8;
/// How long detaching a partition may wait for the lock on `readings` before the pass
/// leaves it for the next one (applies queue behind a waiting `DETACH`).
const DETACH_LOCK_TIMEOUT: &str = "2s";
/// Units looked up (and live ones put back) per statement when finishing a detached
/// partition.
const DETACHED_BATCH: usize = 1_000;

/// What one [`PgStore::prune`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PgPruneReport {
    /// False when another replica held the retention lock: this replica did nothing.
    pub ran: bool,
    /// What was removed, in the embedded store's terms: `readings`, `units`, `rollups`,
    /// `doc_versions`, `steps` (transactions). Twin figures stay 0.
    pub pruned: PruneReport,
    /// Month partitions of `readings` detached and dropped whole.
    pub partitions_dropped: Vec<String>,
    /// Partitions that could go whole but could not be detached within the lock timeout;
    /// their units are pruned, the next pass drops them.
    pub partitions_deferred: Vec<String>,
}

/// A month partition that goes whole: `[lo, hi)` of `ts`.
#[derive(Debug, Clone)]
struct WholeMonth {
    name: String,
    lo: i64,
    hi: i64,
}

impl PgStore {
    /// One retention pass as of `now_ms` (unix ms): raw readings by age, whole month
    /// partitions dropped where they can be, then rollups by age, then document history
    /// (`docs`, `doc_retention.rs`); `twins` are not compacted on PostgreSQL. A policy that
    /// keeps every reading and every document version returns at once. `step_rows` bounds
    /// the readings (or document versions) one transaction looks at. Returns with [`PgPruneReport::ran`] false when another replica is
    /// pruning. Safe while replicas apply: each step is its own short transaction.
    pub async fn prune(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
        step_rows: usize,
    ) -> Result<PgPruneReport> {
        let mut report = PgPruneReport::default();
        if policy.keeps_all_readings() && policy.docs.keeps_everything() {
            report.ran = true;
            return Ok(report);
        }
        let ctx = "taking the retention lock";
        // Held by this idle transaction until the pass ends (or its connection goes).
        let mut guard = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '/kdelta/retention'))",
        )
        .fetch_one(&mut *guard)
        .await
        .map_err(PgError::db(ctx))?;
        if !got {
            tracing::debug!("retention: another replica is pruning; skipping this pass");
            return Ok(report);
        }
        report.ran = true;
        let mut result = self
            .prune_locked(policy, now_ms, step_rows.max(1), &mut report)
            .await;
        if result.is_ok() {
            // Document history (`doc_retention.rs`), under the same lock.
            result = self
                .prune_docs(&policy.docs, now_ms, step_rows, &mut report.pruned)
                .await;
        }
        let released = guard.rollback().await.map_err(PgError::db(ctx));
        result.and(released).map(|()| report)
    }

    async fn prune_locked(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
        step_rows: usize,
        report: &mut PgPruneReport,
    ) -> Result<()> {
        let ctx = "listing series to prune";
        let series: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM series ORDER BY id")
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
        let cutoffs: Vec<(i64, String, Option<i64>)> = series
            .into_iter()
            .map(|(id, name)| {
                let cutoff = readings_cutoff(policy, &name, now_ms);
                (id, name, cutoff)
            })
            .collect();
        self.finish_detached(&mut report.pruned).await?;
        let whole = self.whole_months(&cutoffs).await?;
        let skip: (Vec<i64>, Vec<i64>) = whole.iter().map(|m| (m.lo, m.hi)).unzip();
        for (id, name, cutoff) in &cutoffs {
            if let Some(cutoff) = *cutoff {
                self.prune_series_raw(*id, name, cutoff, step_rows, &skip, report)
                    .await?;
            }
        }
        for month in whole {
            self.drop_month(month, report).await?;
        }
        if let Some(cutoff) = rollups_cutoff(policy, now_ms) {
            for (id, ..) in &cutoffs {
                self.prune_series_rollups(*id, cutoff, step_rows, &mut report.pruned)
                    .await?;
            }
        }
        Ok(())
    }

    /// The attached month partitions that can go whole: they end at or before the cutoff
    /// of every series with rows in them, and before the latest cutoff of all.
    async fn whole_months(
        &self,
        cutoffs: &[(i64, String, Option<i64>)],
    ) -> Result<Vec<WholeMonth>> {
        let ctx = "listing readings partitions";
        let Some(latest) = cutoffs.iter().filter_map(|c| c.2).max() else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'readings'::regclass ORDER BY 1",
        )
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        let mut out = Vec::new();
        for name in names {
            let Some(month) = month_of_partition(&name) else {
                continue; // the default partition
            };
            let (lo, hi) = (month_start_ms(month), month_start_ms(month + 1));
            if hi > latest {
                continue;
            }
            let longer: Vec<i64> = cutoffs
                .iter()
                .filter(|c| c.2.is_none_or(|cut| cut < hi))
                .map(|c| c.0)
                .collect();
            // `name` is one of `partition_name`'s (checked by `month_of_partition`).
            let kept: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM {name} WHERE series_id = ANY($1))"
            )))
            .bind(&longer)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
            if !kept {
                out.push(WholeMonth { name, lo, hi });
            }
        }
        Ok(out)
    }

    /// Prunes the expired units of one series, `step_rows` readings looked at per step;
    /// rows inside the `skip` ranges (whole months, dropped afterwards) are not deleted.
    async fn prune_series_raw(
        &self,
        series_id: i64,
        name: &str,
        cutoff: i64,
        step_rows: usize,
        skip: &(Vec<i64>, Vec<i64>),
        report: &mut PgPruneReport,
    ) -> Result<()> {
        let ctx = "finding readings to prune";
        let mut after = (i64::MIN, i64::MIN);
        let mut last_step: HashSet<i64> = HashSet::new();
        loop {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT ts, change_id FROM readings WHERE series_id = $1 AND ts < $2 \
                 AND (ts, change_id) > ($3, $4) ORDER BY ts, change_id LIMIT $5",
            )
            .bind(series_id)
            .bind(cutoff)
            .bind(after.0)
            .bind(after.1)
            .bind(step_rows as i64)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
            let Some(&last) = rows.last() else {
                return Ok(());
            };
            after = last;
            // Each change once, with the time range of its rows seen in this step.
            let mut seen: HashMap<i64, (i64, i64)> = HashMap::new();
            for &(ts, id) in &rows {
                // A unit spanning two steps was decided by the first.
                if !last_step.contains(&id) {
                    let range = seen.entry(id).or_insert((ts, ts));
                    range.1 = ts;
                }
            }
            let ids: Vec<(i64, i64, i64)> =
                seen.iter().map(|(&id, &(lo, hi))| (id, lo, hi)).collect();
            let mut attempt = 0;
            loop {
                match self.prune_units(series_id, name, cutoff, &ids, skip).await {
                    Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => attempt += 1,
                    Err(e) => return Err(e),
                    Ok((readings, units)) => {
                        report.pruned.readings += readings;
                        report.pruned.units += units;
                        report.pruned.steps += 1;
                        break;
                    }
                }
            }
            if rows.len() < step_rows {
                return Ok(());
            }
            last_step = seen.into_keys().collect();
        }
    }

    /// One step: prunes, of the changes `seen` (id and the time range of this series' rows
    /// the step looked at), the unit of series `name` where it lies wholly before `cutoff`.
    /// Rows of a unit pruned before and still there (a whole month whose drop was deferred
    /// and that can no longer go whole) are deleted in the range seen. Returns the readings
    /// and units pruned.
    async fn prune_units(
        &self,
        series_id: i64,
        name: &str,
        cutoff: i64,
        seen: &[(i64, i64, i64)],
        skip: &(Vec<i64>, Vec<i64>),
    ) -> Result<(u64, u64)> {
        let ctx = "pruning readings";
        let ids: Vec<i64> = seen.iter().map(|s| s.0).collect();
        let ids = &ids[..];
        let ranges: HashMap<i64, (i64, i64)> = seen.iter().map(|s| (s.0, (s.1, s.2))).collect();
        let (mut del_c, mut del_lo, mut del_hi) = (Vec::new(), Vec::new(), Vec::new());
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        // The actors' rows, in actor order as applies lock them: their digests move here.
        let locked: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT idx, digest FROM actors WHERE idx IN \
             (SELECT actor_idx FROM changes WHERE id = ANY($1)) ORDER BY actor FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        let mut digests: HashMap<i64, (Digest, bool)> = locked
            .into_iter()
            .map(|(idx, d)| (idx, (Digest::from_slice(&d), false)))
            .collect();
        let rows: Vec<(i64, i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, actor_idx, manifest FROM changes WHERE id = ANY($1) AND kind = 1",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        let timing: HashMap<i64, Option<i64>> = sqlx::query_as::<_, (i64, Option<i64>)>(
            "SELECT change_id, delta_ms FROM reading_timing WHERE change_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?
        .into_iter()
        .collect();
        // Which units go, by the embedded store's rule.
        let mut expired = Vec::new();
        for (id, actor_idx, manifest) in rows {
            let mut entries = decode_manifest(manifest.as_deref().unwrap_or_default())?;
            let Some(pos) = entries.iter().position(|e| e.name == name) else {
                // Pruned before: what is left of it is no longer served.
                let (lo, hi) = ranges[&id];
                del_c.push(id);
                del_lo.push(lo);
                del_hi.push(hi);
                continue;
            };
            // No timing record: a trusted clock (delta 0); one awaiting correction: NULL.
            let delta = timing.get(&id).copied().unwrap_or(Some(0));
            let Some((lo, hi)) = unit_expired(&entries[pos], delta, cutoff) else {
                continue;
            };
            entries.remove(pos);
            expired.push((id, actor_idx, entries, lo, hi));
        }
        if expired.is_empty() && del_c.is_empty() {
            tx.rollback().await.map_err(PgError::db(ctx))?;
            return Ok((0, 0));
        }
        let expired_ids: Vec<i64> = expired.iter().map(|e| e.0).collect();
        let mut changes = changes_by_id(&mut tx, &expired_ids).await?;
        // What the units added to the rollups stays with the first change of their minute
        // pruned here (`group_pruned_rollups`), at the times their readings are stored
        // (moved by a correction's delta, as `rollup_1m` holds them).
        let units: Vec<PrunedUnitMinutes<i64>> = expired
            .iter()
            .filter_map(|(id, ..)| {
                let change = changes.get(id)?;
                let kdelta_sync::ChangeBody::Readings(b) = &change.body else {
                    return None;
                };
                let s = b.series.iter().find(|s| s.name == name)?;
                let delta = timing.get(id).copied().flatten().unwrap_or(0);
                let stored: Vec<i64> = s.ts.iter().map(|t| t + delta).collect();
                let carrier = (*id, change.actor, change.seq);
                Some(PrunedUnitMinutes::new(carrier, name, &stored, &s.values))
            })
            .collect();
        let max = self.inner.config.limits.max_batch_readings;
        let mut carried = group_pruned_rollups(units, max);
        let (mut readings, mut units) = (0u64, 0u64);
        for (id, actor_idx, entries, lo, hi) in expired {
            let Some(change) = changes.get_mut(&id) else {
                continue;
            };
            let n = match &change.body {
                kdelta_sync::ChangeBody::Readings(b) => b
                    .series
                    .iter()
                    .find(|s| s.name == name)
                    .map_or(0, |s| s.ts.len() as u64),
                _ => 0,
            };
            let Some(element) = prune_series(change, name) else {
                continue;
            };
            for rollup in carried.remove(&id).unwrap_or_default() {
                keep_pruned_rollups(&mut tx, id, series_id, &rollup.minutes).await?;
                change.pruned_rollups.push(rollup);
                change
                    .pruned_rollups
                    .sort_by(|a, b| a.series.cmp(&b.series));
            }
            let Some((digest, touched)) = digests.get_mut(&actor_idx) else {
                continue;
            };
            digest.sub(&element);
            *touched = true;
            sqlx::query("UPDATE changes SET manifest = $1, seal = $2, bytes = $3 WHERE id = $4")
                .bind(encode_manifest_entries(&entries))
                .bind(change.seal.as_ref().map(encode_seal))
                .bind(i32::try_from(change.encoded_len()).unwrap_or(i32::MAX))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(PgError::db(ctx))?;
            del_c.push(id);
            del_lo.push(lo);
            del_hi.push(hi);
            readings += n;
            units += 1;
        }
        sqlx::query(
            "DELETE FROM readings r USING unnest($2::int8[], $3::int8[], $4::int8[]) AS u(c, lo, hi) \
             WHERE r.series_id = $1 AND r.change_id = u.c AND r.ts BETWEEN u.lo AND u.hi \
             AND NOT EXISTS (SELECT 1 FROM unnest($5::int8[], $6::int8[]) AS w(lo, hi) \
                             WHERE r.ts >= w.lo AND r.ts < w.hi)",
        )
        .bind(series_id)
        .bind(&del_c)
        .bind(&del_lo)
        .bind(&del_hi)
        .bind(&skip.0)
        .bind(&skip.1)
        .execute(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        for (idx, (digest, touched)) in &digests {
            if *touched {
                sqlx::query("UPDATE actors SET digest = $1 WHERE idx = $2")
                    .bind(digest.0.as_slice())
                    .bind(idx)
                    .execute(&mut *tx)
                    .await
                    .map_err(PgError::db(ctx))?;
            }
        }
        tx.commit().await.map_err(PgError::db(ctx))?;
        Ok((readings, units))
    }

    /// Detaches the whole month `month` (its units are pruned) and drops it; a busy
    /// `readings` table defers it to the next pass.
    async fn drop_month(&self, month: WholeMonth, report: &mut PgPruneReport) -> Result<()> {
        let ctx = "detaching a readings partition";
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'"
        )))
        .execute(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        // `name` is one of `partition_name`'s (checked by `month_of_partition`).
        let detached = sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE readings DETACH PARTITION {}",
            month.name
        )))
        .execute(&mut *tx)
        .await;
        match detached {
            // 55P03 lock_not_available: applies are busy on `readings`; next pass.
            Err(e) if sqlstate(&e).is_some_and(|c| c == "55P03" || c == "40P01") => {
                tracing::info!(
                    partition = %month.name,
                    "retention: readings is busy; the partition is dropped by the next pass"
                );
                report.partitions_deferred.push(month.name);
                return Ok(());
            }
            Err(e) => return Err(PgError::db(ctx)(e)),
            Ok(_) => {}
        }
        tx.commit().await.map_err(PgError::db(ctx))?;
        self.drop_detached(&month.name, &mut report.pruned).await?;
        tracing::info!(partition = %month.name, lo = month.lo, hi = month.hi, "retention dropped a readings partition");
        report.partitions_dropped.push(month.name);
        Ok(())
    }

    /// Finishes tables an earlier pass detached but did not drop (it stopped halfway).
    async fn finish_detached(&self, report: &mut PruneReport) -> Result<()> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition \
             AND c.relname ~ '^readings_y[0-9]{4}m[0-9]{2}$' ORDER BY 1",
        )
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db("listing detached readings partitions"))?;
        for name in names
            .into_iter()
            .filter(|n| month_of_partition(n).is_some())
        {
            tracing::info!(partition = %name, "retention: finishing a partition an earlier pass detached");
            self.drop_detached(&name, report).await?;
        }
        Ok(())
    }

    /// Drops the detached month table `name`, after moving the rows of units still listed
    /// by their changes (kept whole, or arrived after their series was pruned) back into
    /// `readings`, in one transaction.
    async fn drop_detached(&self, name: &str, report: &mut PruneReport) -> Result<()> {
        let ctx = "dropping a detached readings partition";
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        // The units are streamed (a month may hold millions) and looked up in batches on a
        // second connection; only the live ones — usually none — are kept in memory.
        let mut live = Vec::new();
        {
            let mut reader = self.inner.pool.acquire().await.map_err(PgError::db(ctx))?;
            let sql = format!(
                "SELECT p.change_id, p.series_id, s.name FROM \
                 (SELECT DISTINCT change_id, series_id FROM {name}) p \
                 JOIN series s ON s.id = p.series_id"
            );
            let mut units =
                sqlx::query_as::<_, (i64, i64, String)>(AssertSqlSafe(sql)).fetch(&mut *tx);
            let mut batch = Vec::with_capacity(DETACHED_BATCH);
            loop {
                let next = units.try_next().await.map_err(PgError::db(ctx))?;
                let done = next.is_none();
                batch.extend(next);
                if batch.len() >= DETACHED_BATCH || (done && !batch.is_empty()) {
                    live.extend(live_units(&mut reader, &batch).await?);
                    batch.clear();
                }
                if done {
                    break;
                }
            }
        }
        for chunk in live.chunks(DETACHED_BATCH) {
            let (c, s): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO readings SELECT p.* FROM {name} p \
                 JOIN unnest($1::int8[], $2::int8[]) AS u(c, s) \
                 ON p.change_id = u.c AND p.series_id = u.s ON CONFLICT DO NOTHING"
            )))
            .bind(&c)
            .bind(&s)
            .execute(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
        }
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
        tx.commit().await.map_err(PgError::db(ctx))?;
        report.steps += 1;
        Ok(())
    }

    /// Deletes the rollup rows of `series_id` before `cutoff` and before the minute of its
    /// oldest remaining raw reading, `step_rows` per transaction.
    async fn prune_series_rollups(
        &self,
        series_id: i64,
        cutoff: i64,
        step_rows: usize,
        report: &mut PruneReport,
    ) -> Result<()> {
        let ctx = "pruning rollups";
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT min(ts) FROM readings WHERE series_id = $1")
                .bind(series_id)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(PgError::db(ctx))?;
        let upper = oldest.map_or(cutoff, |t| cutoff.min(minute_of(t)));
        let mut attempt = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM rollup_1m WHERE (series_id, minute, actor_idx) IN \
                 (SELECT series_id, minute, actor_idx FROM rollup_1m \
                  WHERE series_id = $1 AND minute < $2 \
                  ORDER BY minute, actor_idx LIMIT $3 FOR UPDATE)",
            )
            .bind(series_id)
            .bind(upper)
            .bind(step_rows as i64)
            .execute(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx));
            match deleted {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
                Ok(r) => {
                    let n = r.rows_affected();
                    report.rollups += n;
                    report.steps += u64::from(n > 0);
                    if n < step_rows as u64 {
                        break;
                    }
                }
            }
        }
        // The rollups of pruned units of those minutes go with them: a replica served the
        // change from now on gets what the hub's rollups still hold.
        sqlx::query("DELETE FROM pruned_rollups WHERE series_id = $1 AND minute < $2")
            .bind(series_id)
            .bind(upper)
            .execute(&self.inner.pool)
            .await
            .map_err(PgError::db("pruning the rollups of pruned readings"))?;
        Ok(())
    }
}

/// The `(change, series)` units of `units` whose change still lists the series.
async fn live_units(
    conn: &mut PgConnection,
    units: &[(i64, i64, String)],
) -> Result<Vec<(i64, i64)>> {
    let ctx = "reading manifests";
    let ids: Vec<i64> = units.iter().map(|u| u.0).collect();
    let rows = sqlx::query("SELECT id, manifest FROM changes WHERE id = ANY($1) AND kind = 1")
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::db(ctx))?;
    let mut listed: HashMap<i64, HashSet<String>> = HashMap::new();
    for r in rows {
        let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
        let manifest: Option<Vec<u8>> = r.try_get(1).map_err(PgError::db(ctx))?;
        let names = decode_manifest(manifest.as_deref().unwrap_or_default())?
            .into_iter()
            .map(|e| e.name)
            .collect();
        listed.insert(id, names);
    }
    Ok(units
        .iter()
        .filter(|(c, _, name)| listed.get(c).is_some_and(|n| n.contains(name)))
        .map(|(c, s, _)| (*c, *s))
        .collect())
}

/// The month of a partition named by [`partition_name`], `None` for any other name.
fn month_of_partition(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("readings_y")?;
    let (y, m) = rest.split_once('m')?;
    let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
    let month = (y - 1970) * 12 + (m - 1);
    (partition_name(month) == name).then_some(month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_others_are_refused() {
        for month in [0, 1, 683, 683 + 12, 1200] {
            assert_eq!(month_of_partition(&partition_name(month)), Some(month));
        }
        assert_eq!(month_of_partition("readings_default"), None);
        assert_eq!(month_of_partition("readings_y2026m1"), None);
        assert_eq!(month_of_partition("readings_y2026m13"), None);
        assert_eq!(month_of_partition("readings_y2026m12; DROP TABLE x"), None);
    }
}
