//! What a transport must provide: two halves that move whole frames (`Vec<u8>`), one in
//! each direction. Owns the traits and an in-memory link for tests and benchmarks; knows
//! nothing of sockets (the WebSocket transport lives in the agent).
//!
//! The halves are separate so a session can receive while a send is blocked: with one
//! object, two peers that both fill their send buffers and stop reading would deadlock.
//! Over a WebSocket, `StreamExt::split` gives exactly these two halves.

use std::future::Future;
use std::io;

use tokio::sync::mpsc;

/// The sending half of a transport.
///
/// One call carries one whole frame; the transport must deliver frames whole and in order
/// (a WebSocket binary message per frame) or fail. It need not retry: the session ends on
/// the first error and the next session resumes from the version vectors.
pub trait FrameSink: Send {
    /// Sends one frame. Waiting here is the transport's backpressure; the session bounds
    /// the wait with its idle timeout.
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the sending direction after the last frame (a WebSocket close message).
    /// The default does nothing.
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// The receiving half of a transport.
pub trait FrameSource: Send {
    /// Receives the next whole frame; `Ok(None)` when the peer closed the link. A transport
    /// should refuse messages larger than the session's `max_frame_bytes` itself, before
    /// buffering them, and report that as an error.
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send;
}

/// The sending half of an in-memory link.
#[derive(Debug)]
pub struct MemorySink(Option<mpsc::Sender<Vec<u8>>>);

/// The receiving half of an in-memory link.
#[derive(Debug)]
pub struct MemorySource(mpsc::Receiver<Vec<u8>>);

/// Both halves of one end of an in-memory link.
pub type MemoryEnd = (MemorySink, MemorySource);

/// An in-memory duplex link: two ends, each with a sink that feeds the other end's source.
/// `capacity` frames may be buffered per direction before `send` waits.
pub fn memory_link(capacity: usize) -> (MemoryEnd, MemoryEnd) {
    let (a_tx, b_rx) = mpsc::channel(capacity.max(1));
    let (b_tx, a_rx) = mpsc::channel(capacity.max(1));
    (
        (MemorySink(Some(a_tx)), MemorySource(a_rx)),
        (MemorySink(Some(b_tx)), MemorySource(b_rx)),
    )
}

impl FrameSink for MemorySink {
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        let tx = self.0.as_ref().ok_or_else(closed)?;
        tx.send(frame).await.map_err(|_| closed())
    }

    async fn close(&mut self) -> io::Result<()> {
        self.0 = None;
        Ok(())
    }
}

impl FrameSource for MemorySource {
    async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.recv().await)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the in-memory link is closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_and_close() {
        let ((mut a_tx, mut a_rx), (mut b_tx, mut b_rx)) = memory_link(2);
        a_tx.send(vec![1]).await.unwrap();
        b_tx.send(vec![2]).await.unwrap();
        assert_eq!(b_rx.recv().await.unwrap(), Some(vec![1]));
        assert_eq!(a_rx.recv().await.unwrap(), Some(vec![2]));
        a_tx.close().await.unwrap();
        assert_eq!(b_rx.recv().await.unwrap(), None);
        assert!(a_tx.send(vec![3]).await.is_err());
    }
}
