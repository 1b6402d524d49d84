//! The PostgreSQL side of a phase: a schema of its own (created at the start, dropped at the
//! end, also when the phase fails), the URL that puts the replicas in it, and the check that
//! the database holds every device's backlog exactly once.

use std::str::FromStr;

use anyhow::{Context, bail};
use kdelta_pg::{PgConfig, PgStore};
use kdelta_sync::{Digest, VersionVector};
use sqlx::postgres::{PgConnectOptions, PgPool};

use super::devices::Device;

/// A phase's schema on the server.
pub(super) struct PhaseDb {
    base: String,
    pub schema: String,
    admin: PgPool,
}

impl PhaseDb {
    /// Connects to `base` and creates a fresh schema `kdelta_fleet_<random>`.
    pub(super) async fn create(base: &str) -> anyhow::Result<PhaseDb> {
        let admin = PgPool::connect(base).await.with_context(|| {
            format!(
                "connecting to {}",
                crate::backend::redact_url(base, "<redacted>")
            )
        })?;
        let schema = format!("kdelta_fleet_{}", hex::encode(rand::random::<[u8; 6]>()));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .with_context(|| format!("creating the schema {schema}"))?;
        Ok(PhaseDb {
            base: base.to_owned(),
            schema,
            admin,
        })
    }

    /// The replicas' `store.url`: the server, in this schema.
    pub(super) fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base, self.schema
        )
    }

    /// Checks that the database holds exactly the devices' backlogs: its version vector is
    /// the devices' (actor → last seq), its digest (the sum of the per-actor digests the
    /// apply transactions keep, as a hub reports it) is the sum of the devices' digests,
    /// and the `readings` table holds `readings` rows. Returns the digest.
    pub(super) async fn verify(&self, devices: &[Device], readings: u64) -> anyhow::Result<Digest> {
        let options = PgConnectOptions::from_str(&self.base)
            .context("parsing the PostgreSQL URL")?
            .options([("search_path", self.schema.as_str())]);
        let store = PgStore::connect_with(
            options,
            PgConfig {
                max_connections: 1,
                ..PgConfig::default()
            },
        )
        .await
        .context("opening the phase's schema")?;
        let held = store.version_vector().await;
        let digest = store.digest().await;
        store.close().await;
        let (held, digest) = (held?, digest?);
        let mut want = VersionVector::new();
        let mut want_digest = Digest::default();
        for d in devices {
            want.set(d.actor, d.max_seq);
            want_digest.add_digest(&d.digest);
        }
        if held != want {
            bail!(
                "the database holds {} changes of {} actors, the devices wrote {} of {}",
                held.total(),
                held.len(),
                want.total(),
                want.len()
            );
        }
        if digest != want_digest {
            bail!("the database's digest {digest} is not the devices' {want_digest}");
        }
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.readings",
            self.schema
        )))
        .fetch_one(&self.admin)
        .await
        .context("counting the readings")?;
        if u64::try_from(rows).ok() != Some(readings) {
            bail!("the database holds {rows} readings, the devices wrote {readings}");
        }
        Ok(digest)
    }

    /// Drops the schema.
    pub(super) async fn drop_schema(self) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .with_context(|| format!("dropping the schema {}", self.schema))?;
        self.admin.close().await;
        Ok(())
    }
}
