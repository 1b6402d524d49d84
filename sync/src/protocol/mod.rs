//! # The sync protocol
//!
//! Transport-agnostic replication between two stores. A [`SyncSession`] runs one side of a
//! session over any transport that moves whole frames (`Vec<u8>`) both ways — the agent
//! uses a WebSocket; tests use [`memory_link`].
//!
//! - **Handshake**: the initiator sends [`Hello`] (protocol version, actor, name, token,
//!   accepted compressions, frame limit); the responder checks it with its
//!   [`Authenticator`] (tokens compared in constant time by [`TokenAuthenticator`]) and
//!   answers [`Welcome`] or `Refuse`.
//! - **Catch-up**: both send their [`VersionVector`](crate::VersionVector) (the initiator
//!   first; a vector too large for one frame goes as `VectorPart`s closed by a `Vector`,
//!   so any number of actors fits); each streams `Page`s of
//!   [`Store::changes_since`](crate::Store::changes_since) the other's vector, sized exactly
//!   ([`Change::encoded_len`](crate::Change::encoded_len)) to fit the peer's frame limit,
//!   with at most `window` pages unacknowledged. A change that can never fit the peer's
//!   limit is reported (counted in [`SessionStats`], logged naming actor and seq) and its
//!   actor is left out of this session, while every other actor keeps syncing. Each
//!   received page is applied with one [`Store::apply_remote`](crate::Store::apply_remote)
//!   call (one transaction) and answered with an [`Ack`] carrying the receiver's vector
//!   for the page's actors.
//! - **Live**: once a side has sent its backlog it says `Live` and then pushes new commits
//!   as the store announces them (re-checking the change log periodically, since the
//!   announcement channel may lag). `Ping`/`Pong` keep idle links alive.
//! - **Resumption and relay** fall out of version vectors: a new session sends only what the
//!   other side's vector lacks, and `changes_since` covers every actor, so a hub relays.
//! - **Hostile input**: [`FrameCodec::decode`] bounds the frame size before decoding,
//!   bounds zstd output, validates every change and never panics; any error ends the
//!   session with a `Refuse` to the peer and a typed [`ProtocolError`], and leaves the
//!   store as it was (pages are atomic).
//! - **Time**: each side says in its handshake what its wall clock reads and whether it is
//!   synchronised ([`ClockClaim`](crate::ClockClaim)); a received page is screened first and
//!   changes stamped too far ahead of every trusted time source are held back per actor
//!   ([`Quarantined`]), so one peer with a clock a year ahead cannot wedge a link.
//!
//! ## Example
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use kdelta_sync::{ReadingBatch, Store, StoreConfig};
//! use kdelta_sync::protocol::{
//!     memory_link, SessionMode, SyncConfig, SyncSession, TokenAuthenticator,
//! };
//! let dir = tempfile::tempdir().unwrap();
//! let device = Store::open(dir.path().join("device.db"), StoreConfig::default()).await.unwrap();
//! let hub = Store::open(dir.path().join("hub.db"), StoreConfig::default()).await.unwrap();
//! let mut batch = ReadingBatch::new();
//! batch.push("greenhouse.temp", 1_764_000_000_000, 21.5, Some("°C"));
//! device.append(batch).await.unwrap();
//!
//! let config = SyncConfig { mode: SessionMode::OneShot, ..SyncConfig::default() };
//! let auth = Arc::new(TokenAuthenticator::new().with_token("greenhouse", "s3cret"));
//! let ((d_tx, d_rx), (h_tx, h_rx)) = memory_link(16);
//! let outbound = SyncSession::initiator(
//!     device.clone(),
//!     SyncConfig { token: Some("s3cret".into()), ..config.clone() },
//! );
//! let inbound = SyncSession::responder(hub.clone(), config, auth);
//! let never = std::future::pending::<()>;
//! let (a, b) = tokio::join!(outbound.run(d_tx, d_rx, never()), inbound.run(h_tx, h_rx, never()));
//! a.unwrap();
//! b.unwrap();
//! assert_eq!(hub.version_vector(), device.version_vector());
//! assert_eq!(hub.digest(), device.digest());
//! # });
//! ```

mod auth;
mod config;
mod envelope;
mod error;
mod exchange;
mod frame;
mod oversized;
mod quarantine;
mod session;
mod stats;
mod transport;

pub use auth::{Authenticator, DeviceOrigin, PeerCredentials, PeerRole, TokenAuthenticator};
pub use config::{ConfigError, DeviceRelay, SessionMode, SyncConfig};
pub use error::ProtocolError;
pub use frame::{
    Ack, Anchor, Compression, DEFAULT_MAX_FRAME_BYTES, DEFAULT_PAGE_BYTES, FEATURE_LOG_RUNS,
    FEATURE_PRUNED_BODY, FEATURES, Frame, FrameCodec, Hello, MAX_COMPRESSIONS, MAX_FEATURES,
    MAX_FRAME_BYTES, MAX_TEXT_BYTES, MAX_TOKEN_BYTES, MAX_VECTOR_ACTORS, MIN_FRAME_BYTES,
    PAGE_FRAME_OVERHEAD, PROTOCOL_VERSION, VECTOR_ENTRY_MAX_BYTES, VECTOR_FRAME_OVERHEAD, Welcome,
};
pub use oversized::{ChangeNeedsUpgrade, ChangeTooLarge};
pub use quarantine::{ForeignChange, Quarantined};
pub use session::{PeerInfo, SessionEnd, SessionSummary, SyncSession};
pub use stats::{Direction, LastError, SessionPhase, SessionStats, StatsSnapshot};
pub use transport::{FrameSink, FrameSource, MemoryEnd, MemorySink, MemorySource, memory_link};
