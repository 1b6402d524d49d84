//! `kdelta verify`: re-checks a store's signed history offline — every actor's hash chain,
//! every signature and body hash, and the digest — in one read snapshot, so it runs with the
//! agent stopped or beside a running one (read-only). The work is
//! `kdelta_sync::Store::verify_file`; this module finds the store and prints the report.

use anyhow::{Context, bail};
use kdelta_sync::{Store, VerifyReport};

use super::args::OfflineDir;
use crate::config;

/// `kdelta verify [--data-dir DIR]`: prints the report; an error (exit 1) on any failure.
pub async fn verify(dir: OfflineDir) -> anyhow::Result<()> {
    let loaded = config::load(&super::backup::offline_config(&dir))?;
    let data_dir = std::path::absolute(&loaded.config.data_dir)
        .with_context(|| format!("resolving {}", loaded.config.data_dir.display()))?;
    let db = crate::agent::db_path(&data_dir);
    let report = Store::verify_file(&db)
        .await
        .with_context(|| format!("reading the store {}", db.display()))?;
    print!("{}", render(&db.display().to_string(), &report));
    if !report.ok() {
        bail!(
            "{} failure(s): the store's history does not verify; first: {}",
            report.failures.len(),
            report.failures[0]
        );
    }
    Ok(())
}

/// The report as printed.
fn render(db: &str, r: &VerifyReport) -> String {
    let mut out = format!(
        "store     {db}\nactors    {}\nchanges   {} ({} signed, {} unsigned from before signing)\ndigest    {}\n",
        r.actors,
        r.changes,
        r.signed,
        r.unsigned,
        if r.digest_stored == r.digest_computed {
            format!("{} (matches the rows)", r.digest_stored)
        } else {
            format!(
                "stored {}, rows {} (MISMATCH)",
                r.digest_stored, r.digest_computed
            )
        }
    );
    if r.compacted > 0 {
        out.push_str(&format!(
            "compacted {} more in log runs (retention pruned them wholly; each run's last change \
             is checked, the links inside it are not)\n",
            r.compacted
        ));
    }
    if r.ok() {
        out.push_str("result    ok: every chain, signature and the digest verify\n");
    } else {
        out.push_str(&format!(
            "result    FAILED ({} failures)\n",
            r.failures.len()
        ));
        for f in &r.failures {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdelta_sync::{ActorId, VerifyFailure};

    #[test]
    fn the_report_names_each_failure() {
        let mut r = VerifyReport {
            actors: 2,
            changes: 10,
            signed: 7,
            unsigned: 3,
            compacted: 0,
            digest_stored: "aa".into(),
            digest_computed: "aa".into(),
            failures: vec![],
        };
        assert!(render("x.db", &r).contains("ok: every chain"));
        assert!(!render("x.db", &r).contains("compacted"));
        r.compacted = 40;
        assert!(render("x.db", &r).contains("compacted 40 more in log runs"));
        r.failures.push(VerifyFailure {
            actor: Some(ActorId([1; 16])),
            seq: Some(4),
            problem: "the signature does not verify".into(),
        });
        let text = render("x.db", &r);
        assert!(text.contains("FAILED (1 failures)"), "{text}");
        assert!(
            text.contains("actor 01010101010101010101010101010101 seq 4: the signature"),
            "{text}"
        );
    }
}
