//! `kdelta backup` (a client of the running agent: `GET /v1/backup`, saved, then verified by
//! unpacking it and recomputing its digest), and the offline commands `kdelta restore` and
//! `kdelta rekey` (agent stopped; the work is `crate::backup`'s, this module parses, shows
//! progress and explains the result).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use figment::value::Value;
use kdelta_sync::backup::{self, BackupHeader};
use kdelta_sync::{AsOf, Hlc, StoreConfig};

use super::args::{BackupArgs, OfflineDir, RekeyArgs, RestoreArgs, UsageError};
use crate::backup::{RestoreOptions, RestorePhase};
use crate::config::{self, ConfigArgs};

/// `kdelta backup FILE`.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let file = &args.file;
    if file.exists() {
        bail!(
            "{} exists already; choose another name or remove it first",
            file.display()
        );
    }
    let partial = with_suffix(file, ".partial");
    let client = args.conn.client()?;
    let url = client.url("v1/backup", &[]);
    let started = Instant::now();
    let mut response = client.get_stream(url.clone()).await?;
    let mut out = crate::backup::create_private(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let bar = spinner("receiving {spinner} {bytes} ({binary_bytes_per_sec})");
    let received = async {
        let mut total = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| client.transport_error(url.as_str(), &e))
            .context("the backup transfer broke off; nothing was kept")?
        {
            out.write_all(&chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
            total += chunk.len() as u64;
            bar.set_position(total);
        }
        out.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        anyhow::Ok(total)
    }
    .await;
    bar.finish_and_clear();
    let bytes = match received {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let verified = verify_file(&partial).await;
    let header = match verified {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("the backup received does not verify; nothing was kept"));
        }
    };
    std::fs::rename(&partial, file).with_context(|| format!("renaming {}", partial.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    println!(
        "backup written to {} and verified: {} changes of {} actors, store {} → {} ({:.1}× smaller) in {:.1} s ({:.1} MB/s of store)",
        file.display(),
        header.changes,
        header.version_vector.len(),
        human_bytes(header.db_bytes),
        human_bytes(bytes),
        header.db_bytes as f64 / bytes.max(1) as f64,
        secs,
        header.db_bytes as f64 / 1e6 / secs,
    );
    println!("actor {}, digest {}", header.actor, header.digest);
    Ok(())
}

/// Unpacks `file` next to itself and recomputes the digest; the scratch copy is removed.
async fn verify_file(file: &Path) -> anyhow::Result<BackupHeader> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".kdelta-verify-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch directory in {}", dir.display()))?;
    let db = scratch.path().join("verify.db");
    let bar = progress_bar("verifying [{bar:30}] {bytes}/{total_bytes} ({eta} left)");
    let header = {
        let (file, db, bar) = (file.to_path_buf(), db.clone(), bar.clone());
        tokio::task::spawn_blocking(move || {
            backup::unpack(&file, &db, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
        })
        .await
        .context("verifying the backup")??
    };
    bar.set_message("digest");
    backup::verify_unpacked(file, &db, &header, StoreConfig::default()).await?;
    bar.finish_and_clear();
    Ok(header)
}

/// `kdelta restore FILE`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let loaded = config::load(&offline_config(&args.dir))?;
    let data_dir = std::path::absolute(&loaded.config.data_dir)
        .with_context(|| format!("resolving {}", loaded.config.data_dir.display()))?;
    let as_of = args.as_of.as_deref().map(parse_as_of).transpose()?;
    let opts = RestoreOptions {
        backup: args.file.clone(),
        db_path: crate::agent::db_path(&data_dir),
        data_dir,
        force: args.force,
        same_identity: args.same_identity,
        as_of,
        store: loaded.config.store.settings(),
    };
    let bar = progress_bar("{msg} [{bar:30}] {pos}/{len} ({eta} left)");
    let shown = bar.clone();
    let report = crate::backup::restore(&opts, move |phase, done, total| {
        let label = match phase {
            RestorePhase::Unpack => "unpacking (bytes)",
            RestorePhase::Verify => "verifying the digest",
            RestorePhase::Replay => "replaying changes",
        };
        shown.set_message(label);
        shown.set_length(total);
        shown.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    let h = &report.header;
    println!(
        "restored {} (taken {}, {} changes, digest verified) into {}",
        args.file.display(),
        crate::time::format_rfc3339_ms(h.created_at_ms as i64),
        h.changes,
        opts.db_path.display()
    );
    if let (Some((kept, dropped)), Some(at)) = (report.replayed, as_of) {
        println!(
            "as of {at}: kept {kept} changes, left out {dropped} made later; digest {}",
            report.digest
        );
        if dropped > 0 {
            eprintln!(
                "note: the {dropped} later changes still exist on any peer or hub this device synced them to,                  and its first sync session brings them back. To undo them everywhere, put the old values                  back as new versions instead (`kdelta get KEY --as-of {at}`, then `kdelta put`); see                  docs/raspberry-pi.md, \"Point in time\"."
            );
        }
    }
    if args.same_identity {
        eprintln!(
            "warning: --same-identity: this store keeps actor {}. If the device it was backed up from (or \
             another copy of this backup) still runs, both write as {} — a cloned card: peers and the hub \
             refuse the second copy's changes. Use it only to replace a device that is gone; otherwise \
             run `kdelta rekey` before starting.",
            report.actor, report.actor
        );
    } else {
        println!(
            "new identity: actor {} (the backup's changes keep their actor {})",
            report.actor, h.actor
        );
    }
    if let Some((was, now)) = report.cursor_reset {
        println!(
            "MQTT outbox cursor was at log position {was}, beyond the restored log: reset to {now}, \
             so changes written from now on are published"
        );
    }
    println!(
        "sync peers compare version vectors at every session: changes the restored store lacks \
         are fetched again from them. Start the agent now (systemctl start kdelta)."
    );
    Ok(())
}

/// `kdelta rekey`.
pub async fn rekey(args: RekeyArgs) -> anyhow::Result<()> {
    let loaded = config::load(&offline_config(&args.dir))?;
    let data_dir = std::path::absolute(&loaded.config.data_dir)
        .with_context(|| format!("resolving {}", loaded.config.data_dir.display()))?;
    if args.rebase_clock {
        let r = crate::clock_rebase::by_hand(
            &data_dir,
            &crate::agent::db_path(&data_dir),
            loaded.config.store.settings().max_clock_offset_ms,
        )
        .await?;
        println!(
            "store in {} now writes as actor {} (was {}, whose newest change is stamped {}); \
             its new changes are stamped from {}; the old actor's changes stay held back at \
             peers until their time, and its sync credentials move on to the new actor at the \
             next session",
            data_dir.display(),
            r.new_actor,
            r.old_actor,
            crate::time::format_rfc3339_ms(r.old_newest_ms as i64),
            crate::time::format_rfc3339_ms(r.at_ms as i64)
        );
        return Ok(());
    }
    let report = crate::backup::rekey(&data_dir, &crate::agent::db_path(&data_dir)).await?;
    println!(
        "store in {} now writes as actor {} (was {}; changes already stored keep their actor)",
        data_dir.display(),
        report.new,
        report.old
    );
    Ok(())
}

/// `kdelta compact`.
pub async fn compact(dir: OfflineDir) -> anyhow::Result<()> {
    let loaded = config::load(&offline_config(&dir))?;
    let data_dir = std::path::absolute(&loaded.config.data_dir)
        .with_context(|| format!("resolving {}", loaded.config.data_dir.display()))?;
    let (before, after) =
        crate::backup::compact(&data_dir, &crate::agent::db_path(&data_dir)).await?;
    println!(
        "store in {} compacted: {before} → {after} bytes; pruned space now goes back to the file system",
        data_dir.display()
    );
    Ok(())
}

pub(super) fn offline_config(dir: &OfflineDir) -> ConfigArgs {
    let mut flags: Vec<(&'static str, &'static str, Value)> = Vec::new();
    if let Some(d) = &dir.data_dir {
        flags.push((
            "data_dir",
            "--data-dir",
            Value::from(d.display().to_string()),
        ));
    }
    ConfigArgs {
        file: dir.config.clone(),
        flags,
        ..ConfigArgs::default()
    }
}

fn parse_as_of(text: &str) -> anyhow::Result<Hlc> {
    match crate::api::time::parse_as_of("--as-of", text) {
        Ok(AsOf::Hlc(h)) => Ok(h),
        Ok(AsOf::WallMs(ms)) => Ok(Hlc::end_of_ms(ms)),
        Err(e) => Err(UsageError(e.message).into()),
    }
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", file.display()))
}

fn spinner(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
