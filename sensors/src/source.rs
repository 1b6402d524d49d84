//! The two source traits the agent drives. Object-safe (boxed futures) so the agent can hold a
//! `Vec<Box<dyn PolledSource>>` built from configuration.

use std::future::Future;
use std::pin::Pin;

use crate::{Reading, SourceError};

/// A boxed, sendable future, as returned by the source traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a streaming source sends its readings. Bounded: when the agent's store is slower than
/// the device, `send` waits (backpressure) instead of buffering without limit.
pub type ReadingSink = tokio::sync::mpsc::Sender<Reading>;

/// A source the agent samples at its interval (the scheduler owns the timing).
pub trait PolledSource: Send {
    /// Name of this source instance, for status and metrics (e.g. `system`, `greenhouse-modbus`).
    fn name(&self) -> &str;
    /// Reads every value once. A partial failure (one sensor of many) should still return the
    /// readings that worked; an `Err` means nothing could be read this round.
    fn sample(&mut self) -> BoxFuture<'_, Result<Vec<Reading>, SourceError>>;
}

/// A source that produces readings whenever its device talks (serial line protocols).
pub trait StreamingSource: Send {
    /// Name of this source instance, for status and metrics.
    fn name(&self) -> &str;
    /// Runs until `shutdown` resolves or a non-transient error occurs. Transient failures (the
    /// device disappears) are retried with backoff inside; each is reported through `on_error`
    /// so the agent can show it as a status.
    fn run<'a>(
        &'a mut self,
        sink: ReadingSink,
        on_error: Box<dyn Fn(&SourceError) + Send + Sync + 'a>,
        shutdown: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<(), SourceError>>;
}
