//! Frame adapters shared by both ends of a sync link: one protocol frame per binary WebSocket
//! message, for axum's socket (inbound, `GET /v1/sync`) and tungstenite's (outbound peers).
//! Pings and pongs are skipped; a text message is a protocol error. Knows nothing of sessions.

use std::fmt::Display;
use std::io;
use std::marker::PhantomData;

use futures::{Sink, SinkExt, Stream, StreamExt};
use kdelta_sync::protocol::{FrameSink, FrameSource};

/// What a received WebSocket message means for the sync link.
pub(crate) enum Incoming {
    /// A protocol frame.
    Frame(Vec<u8>),
    /// The peer closed the link.
    Closed,
    /// Control traffic (ping, pong, raw frame): skip it.
    Skip,
    /// A text message: not part of the protocol.
    Text,
}

/// The two WebSocket message types seen through one lens.
pub(crate) trait WsMessage: Send + 'static {
    /// A binary message carrying `frame`.
    fn binary(frame: Vec<u8>) -> Self;
    /// What this message means for the link.
    fn classify(self) -> Incoming;
}

impl WsMessage for axum::extract::ws::Message {
    fn binary(frame: Vec<u8>) -> Self {
        Self::Binary(frame.into())
    }
    fn classify(self) -> Incoming {
        match self {
            Self::Binary(b) => Incoming::Frame(Vec::from(b)),
            Self::Close(_) => Incoming::Closed,
            Self::Ping(_) | Self::Pong(_) => Incoming::Skip,
            Self::Text(_) => Incoming::Text,
        }
    }
}

impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn binary(frame: Vec<u8>) -> Self {
        Self::Binary(frame.into())
    }
    fn classify(self) -> Incoming {
        match self {
            Self::Binary(b) => Incoming::Frame(Vec::from(b)),
            Self::Close(_) => Incoming::Closed,
            Self::Ping(_) | Self::Pong(_) | Self::Frame(_) => Incoming::Skip,
            Self::Text(_) => Incoming::Text,
        }
    }
}

fn io_err(e: impl Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The sending half of a WebSocket as a [`FrameSink`].
pub(crate) struct WsSink<S, M>(S, PhantomData<fn(M)>);

impl<S, M> WsSink<S, M> {
    pub(crate) fn new(sink: S) -> Self {
        WsSink(sink, PhantomData)
    }
}

impl<S, M> FrameSink for WsSink<S, M>
where
    S: Sink<M> + Unpin + Send,
    S::Error: Display,
    M: WsMessage,
{
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.0.send(M::binary(frame)).await.map_err(io_err)
    }

    async fn close(&mut self) -> io::Result<()> {
        self.0.close().await.map_err(io_err)
    }
}

/// The receiving half of a WebSocket as a [`FrameSource`].
pub(crate) struct WsSource<S>(pub(crate) S);

impl<S, M, E> FrameSource for WsSource<S>
where
    S: Stream<Item = Result<M, E>> + Unpin + Send,
    M: WsMessage,
    E: Display,
{
    async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self
                .0
                .next()
                .await
                .transpose()
                .map_err(io_err)?
                .map(WsMessage::classify)
            {
                None | Some(Incoming::Closed) => return Ok(None),
                Some(Incoming::Frame(f)) => return Ok(Some(f)),
                Some(Incoming::Skip) => continue,
                Some(Incoming::Text) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on a sync link (frames are binary)",
                    ));
                }
            }
        }
    }
}
