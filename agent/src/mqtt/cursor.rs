//! Where the outbox cursor lives: the file `<data_dir>/mqtt-outbox.cursor` on the SQLite
//! store ([`CursorFile`]), the row `mqtt` of the `log_cursors` table on a PostgreSQL hub —
//! shared by its replicas, so the one that leads the MQTT client next resumes where the
//! last one stopped (`kdelta_pg`'s `log.rs`).

use super::MqttError;
use super::outbox::{CursorFile, CursorState};
use crate::backend::Backend;

/// The row of `log_cursors` a hub's MQTT outbox uses.
#[cfg(feature = "postgres")]
pub const CURSOR_ROW: &str = "mqtt";

/// The outbox cursor of one store.
pub enum OutboxCursor {
    /// A file in the data directory.
    File(CursorFile),
    /// A row in the hub's database.
    #[cfg(feature = "postgres")]
    Table(kdelta_pg::PgStore),
}

impl OutboxCursor {
    /// The cursor of `backend` (a file in `data_dir` on SQLite).
    pub fn of(backend: &Backend, data_dir: &std::path::Path) -> OutboxCursor {
        match backend {
            Backend::Sqlite(_) => OutboxCursor::File(CursorFile::in_dir(data_dir)),
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => OutboxCursor::Table(hub.store.clone()),
        }
    }

    /// Where it is, for log lines.
    pub fn describe(&self) -> String {
        match self {
            OutboxCursor::File(f) => f.path().display().to_string(),
            #[cfg(feature = "postgres")]
            OutboxCursor::Table(_) => format!("log_cursors row {CURSOR_ROW:?}"),
        }
    }

    /// The stored cursor; `None` when none was stored yet.
    pub async fn load(&self) -> Result<Option<CursorState>, MqttError> {
        match self {
            OutboxCursor::File(f) => f.load(),
            #[cfg(feature = "postgres")]
            OutboxCursor::Table(hub) => Ok(hub
                .log_cursor(CURSOR_ROW)
                .await
                .map_err(kdelta_sync::StoreError::from)?
                .map(|(acked, sent)| CursorState { acked, sent })),
        }
    }

    /// Stores the cursor durably.
    pub async fn store(&self, state: CursorState) -> Result<(), MqttError> {
        match self {
            OutboxCursor::File(f) => f.store(state),
            #[cfg(feature = "postgres")]
            OutboxCursor::Table(hub) => Ok(hub
                .store_log_cursor(CURSOR_ROW, state.acked, state.sent)
                .await
                .map_err(kdelta_sync::StoreError::from)?),
        }
    }
}
