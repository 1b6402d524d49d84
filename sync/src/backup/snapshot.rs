//! Taking a backup: [`Store::snapshot`] copies the live database with SQLite's online backup
//! API in one step — one read transaction, so the copy is consistent while the writer keeps
//! committing (WAL readers never block it) — and [`pack`] writes the backup file.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OptionalExtension};

use super::{BackupError, BackupHeader};
use crate::{ActorId, Digest, Store, StoreError, VersionVector};

/// Bytes read from the database per compression step (also the progress granularity).
const CHUNK: usize = 1 << 20;

/// zstd level: fast enough for a Pi, ~3–5× on readings.
const ZSTD_LEVEL: i32 = 3;

impl Store {
    /// Writes a consistent copy of this store's database to `dest` (a new file; it must not
    /// exist) and returns the header describing it. Ingest continues meanwhile; the copy holds
    /// exactly the changes committed when it started. `dest` should be on a file system with
    /// room for the whole database.
    pub async fn snapshot(&self, dest: &Path) -> Result<BackupHeader, BackupError> {
        let source = self.path().to_path_buf();
        let config = self.config().clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let src = crate::schema::connect(&source, &config, true)?;
            copy_online(&src, &dest, Duration::from_millis(config.busy_timeout_ms))?;
            describe(&dest)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// The online backup of `src` into the new file `dest`, all pages in one step.
fn copy_online(src: &Connection, dest: &Path, busy: Duration) -> Result<(), BackupError> {
    if dest.exists() {
        return Err(BackupError::Io {
            path: dest.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
        });
    }
    let mut dst = Connection::open(dest).map_err(StoreError::db("creating the snapshot file"))?;
    {
        let backup =
            Backup::new(src, &mut dst).map_err(StoreError::db("starting the online backup"))?;
        let started = Instant::now();
        loop {
            match backup
                .step(-1)
                .map_err(StoreError::db("copying the database"))?
            {
                StepResult::Done => break,
                // Another connection holds a lock for a moment: retry within the busy timeout.
                _ if started.elapsed() < busy => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    return Err(BackupError::Store(StoreError::WriteGroup {
                        context: "copying the database for a backup",
                        detail: "the database stayed locked past the busy timeout".into(),
                        transient: true,
                    }));
                }
            }
        }
    }
    // A self-contained file: no WAL beside it.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(StoreError::db("finishing the snapshot file"))?;
    dst.close()
        .map_err(|(_, e)| StoreError::db("closing the snapshot file")(e))?;
    Ok(())
}

/// Reads what a snapshot file holds (actor, version vector, digest, size, hash).
pub(crate) fn describe(db: &Path) -> Result<BackupHeader, BackupError> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(StoreError::db("opening the snapshot"))?;
    let meta = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(StoreError::db("reading the snapshot's identity"))
    };
    let actor = meta("actor")?
        .and_then(|b| ActorId::from_slice(&b))
        .ok_or(StoreError::Decode {
            what: "snapshot actor id",
            detail: "missing or not 16 bytes".into(),
        })?;
    let digest = meta("digest")?
        .map(|d| Digest::from_slice(&d))
        .unwrap_or_default();
    let mut vv = VersionVector::new();
    {
        let mut st = conn
            .prepare("SELECT actor, max_seq FROM actors WHERE max_seq > 0")
            .map_err(StoreError::db("reading the snapshot's version vector"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(StoreError::db("reading the snapshot's version vector"))?;
        for row in rows {
            let (a, seq) = row.map_err(StoreError::db("reading the snapshot's version vector"))?;
            if let Some(a) = ActorId::from_slice(&a) {
                vv.set(a, seq.max(0) as u64);
            }
        }
    }
    let changes: i64 = conn
        .query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))
        .map_err(StoreError::db("counting the snapshot's changes"))?;
    let schema_version: i64 = conn
        .query_row("SELECT MAX(version) FROM _sqlx_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map_err(StoreError::db("reading the snapshot's schema version"))?
        .unwrap_or(0);
    drop(conn);
    let (db_bytes, hash) = hash_file(db)?;
    Ok(BackupHeader {
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        kdelta_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        actor,
        version_vector: vv,
        digest: digest.to_string(),
        changes: changes.max(0) as u64,
        db_bytes,
        db_blake3: hash,
    })
}

/// Size and BLAKE3 (hex) of a file.
fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = std::fs::File::open(path).map_err(BackupError::io(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(BackupError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// Writes the backup file — header, then the zstd-compressed database `db` (a snapshot
/// described by `header`) — to `out`, calling `progress` with the database bytes done so far.
/// Returns the bytes written to `out`.
pub fn pack(
    header: &BackupHeader,
    db: &Path,
    out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, BackupError> {
    let out_name = Path::new("the backup output");
    let mut counted = CountingWriter { inner: out, n: 0 };
    header
        .write_to(&mut counted)
        .map_err(BackupError::io(out_name))?;
    let mut enc = zstd::stream::write::Encoder::new(&mut counted, ZSTD_LEVEL)
        .map_err(BackupError::io(out_name))?;
    enc.include_checksum(true)
        .map_err(BackupError::io(out_name))?;
    let _ = enc.set_pledged_src_size(Some(header.db_bytes));
    let mut f = std::fs::File::open(db).map_err(BackupError::io(db))?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(BackupError::io(db))?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])
            .map_err(BackupError::io(out_name))?;
        done += n as u64;
        progress(done);
    }
    if done != header.db_bytes {
        return Err(BackupError::Corrupt {
            path: db.to_path_buf(),
            detail: format!(
                "the snapshot changed while packing ({done} bytes, header says {})",
                header.db_bytes
            ),
        });
    }
    enc.finish().map_err(BackupError::io(out_name))?;
    counted.flush().map_err(BackupError::io(out_name))?;
    Ok(counted.n)
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
