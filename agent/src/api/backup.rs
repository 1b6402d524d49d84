//! `GET /v1/backup` (scope `admin`): a backup of the running store, streamed as it is packed
//! (`crate::backup::write_backup`: a consistent online snapshot, zstd, a verifiable header).
//! Ingest keeps running meanwhile. Errors found before the first byte (another backup
//! running, the snapshot failing) are ordinary JSON errors; a failure after that aborts the
//! transfer, so a client never mistakes a cut-short body for a whole backup (and the file's
//! header lets `kdelta restore` detect one anyway).

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kdelta_sync::backup::BackupError;
use tokio::sync::mpsc;

use super::ApiError;
use crate::backup::{BACKUP_EXTENSION, write_backup};
use crate::state::Agent;

/// Bytes gathered before one chunk goes to the client.
const CHUNK: usize = 256 * 1024;

/// Chunks in flight between the packing thread and the response (backpressure beyond).
const CHUNKS_IN_FLIGHT: usize = 8;

/// `GET /v1/backup`.
pub async fn backup(State(agent): State<Agent>) -> Result<Response, ApiError> {
    let store = agent.sqlite()?.clone();
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, BackupError>>(CHUNKS_IN_FLIGHT);
    let writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    {
        let agent = agent.clone();
        tokio::spawn(async move {
            let done = write_backup(&store, &agent.data_dir, writer, |_, _| {}).await;
            match done {
                Ok((header, bytes)) => tracing::info!(
                    bytes,
                    changes = header.changes,
                    digest = %header.digest,
                    "backup streamed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "backup failed");
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
    }
    let first = match rx.recv().await {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return Err(api_error(e)),
        None => return Err(ApiError::internal("the backup ended before its first byte")),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .map(|item| item.map_err(|e| std::io::Error::other(e.to_string())));
    let stamp =
        crate::time::format_rfc3339_ms(crate::time::now_ms_u64() as i64).replace([':', '.'], "-");
    let file = format!("kdelta-{}-{stamp}.{BACKUP_EXTENSION}", agent.device);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.kdelta.backup".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn api_error(e: BackupError) -> ApiError {
    match e {
        BackupError::Store(e) => ApiError::from(e),
        BackupError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
            ApiError::unavailable(source.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// A `Write` for the packing thread: gathers [`CHUNK`] bytes, then hands them to the
/// response, waiting while [`CHUNKS_IN_FLIGHT`] are queued. A client that went away makes
/// writes fail (`BrokenPipe`), which stops the backup and removes its scratch copy.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, BackupError>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
