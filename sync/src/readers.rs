//! The read side of the store: a small pool of read-only rusqlite connections (WAL, so reads
//! never wait for the writer). A read takes an idle connection and runs its closure off the
//! async workers: on a multi-threaded runtime in place (`block_in_place`: the worker's
//! other tasks move to another thread while it runs), on a current-thread runtime on
//! tokio's blocking pool. Connections
//! are opened lazily up to `read_connections`; a read waits for a free one beyond that.
//!
//! A closure holds its connection for as long as it runs, so long reads are paged by their
//! callers (sync pages by byte budget, lists and history by limits).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::{Result, StoreConfig, StoreError};

/// True on a multi-threaded tokio runtime, where `block_in_place` may run blocking work on
/// the calling thread (it panics on a current-thread runtime).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Runs the statements of `f` in one read transaction: one snapshot (a version written
/// between two of them is never half seen) and one round of file and WAL locks instead of
/// one per statement. The transaction is rolled back when `f` fails (were that to fail too,
/// the connection is left in it and dropped by `Readers::read`).
pub(crate) fn in_snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map_err(StoreError::db("reading in one snapshot"))
    };
    run("BEGIN")?;
    match f(conn) {
        Ok(out) => run("COMMIT").map(|_| out),
        Err(e) => {
            let _ = run("ROLLBACK");
            Err(e)
        }
    }
}

/// The pool of read connections.
pub(crate) struct Readers {
    path: PathBuf,
    config: StoreConfig,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    /// A pool for the database at `path` (opened by the writer first, so it exists).
    pub fn new(path: PathBuf, config: StoreConfig) -> Arc<Readers> {
        let n = config.read_connections.max(1) as usize;
        Arc::new(Readers {
            path,
            config,
            idle: Mutex::new(Vec::with_capacity(n)),
            permits: Semaphore::new(n),
        })
    }

    /// Runs `f` on a read connection, off the async workers.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        let run = move || {
            let taken = pool.idle.lock().expect("reader pool lock").pop();
            let mut conn = match taken {
                Some(c) => c,
                None => crate::schema::connect(&pool.path, &pool.config, true)?,
            };
            let out = f(&mut conn);
            // A connection left inside a transaction (a closure that failed half way) is
            // not reused.
            if conn.is_autocommit() && !pool.permits.is_closed() {
                pool.idle.lock().expect("reader pool lock").push(conn);
            }
            out
        };
        let out = if on_multi_thread_runtime() {
            // The read runs on this thread; the worker's other tasks move to another one.
            // Two cross-thread wake-ups fewer than `spawn_blocking` (~45 µs of a ~50 µs
            // point read on the 2-core VM, docs/PERFORMANCE.md).
            tokio::task::block_in_place(run)
        } else {
            match tokio::task::spawn_blocking(run).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(StoreError::Closed),
            }
        };
        drop(permit);
        out
    }

    /// Refuses new reads and closes the idle connections (reads in flight finish and close
    /// theirs), so the writer's final checkpoint can truncate the WAL.
    pub fn close(&self) {
        self.permits.close();
        self.idle.lock().expect("reader pool lock").clear();
    }
}
