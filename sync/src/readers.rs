//! The read side of the store: a small pool of read-only rusqlite connections (WAL, so reads
//! never wait for the writer). A read takes an idle connection and runs its closure on
//! tokio's blocking pool; async callers never block a worker thread on SQLite. Connections
//! are opened lazily up to `read_connections`; a read waits for a free one beyond that.
//!
//! A closure holds its connection for as long as it runs, so long reads are paged by their
//! callers (sync pages by byte budget, lists and history by limits).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::{Result, StoreConfig, StoreError};

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
        let out = tokio::task::spawn_blocking(move || {
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
        })
        .await;
        drop(permit);
        match out {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Refuses new reads and closes the idle connections (reads in flight finish and close
    /// theirs), so the writer's final checkpoint can truncate the WAL.
    pub fn close(&self) {
        self.permits.close();
        self.idle.lock().expect("reader pool lock").clear();
    }
}
