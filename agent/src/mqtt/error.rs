//! The one error type of the MQTT area. Bad payloads are not errors of the task (they are
//! counted and dropped); these are the failures that stop it or that a caller must see.

use std::path::PathBuf;

use crate::section::InvalidValue;

/// What went wrong in the MQTT client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// A `[mqtt]` value `validate` refused (the key is e.g. `mqtt.qos`).
    #[error(transparent)]
    Config(#[from] InvalidValue),
    /// TLS could not be set up (CA file unreadable, no root certificates).
    #[error("TLS setup for the MQTT broker failed: {0}")]
    Tls(String),
    /// The outbox cursor file could not be read or written.
    #[error("outbox cursor {path}: {source}")]
    Cursor {
        /// The cursor file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The outbox cursor file holds something else than a cursor.
    #[error(
        "outbox cursor {path} is damaged ({detail}); delete it to republish from the current end of the log"
    )]
    CursorCorrupt {
        /// The cursor file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Reading the change log failed.
    #[error("reading the change log for the MQTT outbox: {0}")]
    Store(#[from] kdelta_sync::StoreError),
}

impl MqttError {
    /// True when retrying later may succeed (store busy, disk hiccup); false for configuration
    /// and corruption errors.
    pub fn is_transient(&self) -> bool {
        match self {
            MqttError::Cursor { .. } => true,
            MqttError::Store(e) => !matches!(e, kdelta_sync::StoreError::Closed),
            _ => false,
        }
    }
}
