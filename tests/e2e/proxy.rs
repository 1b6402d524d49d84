//! A TCP proxy for link faults between agents: listens on `127.0.0.1:0`, forwards every
//! connection to one target address — or, as a small load balancer in front of hub replicas,
//! to several in turn ([`Proxy::round_robin`]; a target that refuses the connection is
//! skipped, like HAProxy's `redispatch`) — and on command cuts the link (resets every
//! connection and resets new ones until restored), stalls it (holds bytes, keeps connections
//! open) or cuts it after N more bytes in one direction. Counts the bytes it forwarded per
//! direction.
//!
//! Memory is bounded: one 16 KiB buffer per direction per connection; while stalled it reads
//! nothing, so the kernel's buffers and TCP flow control push back on the sender. Everything
//! stops when the [`Proxy`] is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Bytes read and written at once per direction of a connection.
const BUFFER_BYTES: usize = 16 * 1024;

/// A direction of the proxied link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the connecting client to the target (a device's bytes to its hub).
    Up,
    /// From the target back to the client.
    Down,
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways.
    Open,
    /// Holds bytes; connections stay open.
    Stalled,
    /// Every connection was reset; new ones are reset at once.
    Cut,
}

#[derive(Debug, Clone, Copy)]
struct LinkState {
    mode: Mode,
    /// Raised by every cut: a connection accepted in an older epoch closes.
    epoch: u64,
}

struct Shared {
    /// Where connections go, in turn (one target for a plain link).
    targets: Mutex<Vec<SocketAddr>>,
    /// The next connection's turn.
    turn: AtomicUsize,
    state: watch::Sender<LinkState>,
    /// Bytes forwarded: `[Up, Down]`.
    forwarded: [AtomicU64; 2],
    /// Bytes left in one direction before the link is cut (`cut_after`).
    budget: Mutex<Option<(Dir, u64)>>,
    accepted: AtomicU64,
}

/// A running proxy. Dropping it stops the listener and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl Proxy {
    /// Starts a proxy to `target` on `127.0.0.1:0`, open.
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::round_robin(vec![target]).await
    }

    /// Starts a proxy on `127.0.0.1:0` that sends each new connection to the next of
    /// `targets` (skipping one that refuses it), open.
    pub async fn round_robin(targets: Vec<SocketAddr>) -> Proxy {
        assert!(!targets.is_empty(), "a proxy needs a target");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            targets: Mutex::new(targets),
            turn: AtomicUsize::new(0),
            state: watch::Sender::new(LinkState {
                mode: Mode::Open,
                epoch: 0,
            }),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            budget: Mutex::new(None),
            accepted: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Proxy {
            addr,
            shared,
            _stop: stop.drop_guard(),
        }
    }

    /// A proxy to an agent's `http://host:port` URL.
    pub async fn to_url(url: &str) -> Proxy {
        let target = url
            .strip_prefix("http://")
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("not an http://ip:port URL: {url}"));
        Proxy::start(target).await
    }

    /// Replaces target `i` (a restarted replica listens on a new port); connections made
    /// already stay where they are.
    pub fn set_target(&self, i: usize, target: SocketAddr) {
        self.shared.targets()[i] = target;
    }

    /// Its listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for a peer's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every connection and every new one until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.cut();
    }

    /// Stops forwarding; connections stay open until [`restore`](Self::restore) or a cut.
    pub fn stall(&self) {
        self.shared.state.send_modify(|s| {
            if s.mode == Mode::Open {
                s.mode = Mode::Stalled;
            }
        });
    }

    /// Forwards again (after a cut, new connections only). Clears a pending `cut_after`.
    pub fn restore(&self) {
        *self.shared.budget() = None;
        self.shared.state.send_modify(|s| s.mode = Mode::Open);
    }

    /// Cuts the link once `bytes` more bytes have been forwarded in direction `dir`
    /// (exactly: the last write is shortened to end at the limit).
    pub fn cut_after(&self, dir: Dir, bytes: u64) {
        *self.shared.budget() = Some((dir, bytes));
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.state.borrow().mode
    }

    /// Bytes forwarded in `dir` since start.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.shared.forwarded[dir as usize].load(Ordering::SeqCst)
    }

    /// Connections accepted since start (including those reset at once while cut).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn cut(&self) {
        self.state.send_modify(|s| {
            s.mode = Mode::Cut;
            s.epoch += 1;
        });
    }

    fn targets(&self) -> std::sync::MutexGuard<'_, Vec<SocketAddr>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects to the target whose turn it is, or to the next ones when it refuses.
    async fn connect(&self) -> Option<TcpStream> {
        let targets = self.targets().clone();
        let first = self.turn.fetch_add(1, Ordering::SeqCst);
        for k in 0..targets.len() {
            if let Ok(s) = TcpStream::connect(targets[(first + k) % targets.len()]).await {
                return Some(s);
            }
        }
        None
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Option<(Dir, u64)>> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many of `n` bytes in `dir` may pass, and whether the link is cut after them.
    fn take(&self, dir: Dir, n: usize) -> (usize, bool) {
        let mut budget = self.budget();
        match *budget {
            Some((d, left)) if d == dir => {
                let pass = (n as u64).min(left);
                if pass == left {
                    *budget = None;
                    (pass as usize, true)
                } else {
                    *budget = Some((d, left - pass));
                    (n, false)
                }
            }
            _ => (n, false),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            // Out of descriptors or similar: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        // Closing with SO_LINGER 0 sends RST: a cut looks like a reset link, not a clean end.
        let _ = client.set_zero_linger();
        let state = *shared.state.borrow();
        if state.mode == Mode::Cut {
            drop(client);
            continue;
        }
        tokio::spawn(connection(
            client,
            shared.clone(),
            state.epoch,
            stop.clone(),
        ));
    }
}

async fn connection(
    mut client: TcpStream,
    shared: Arc<Shared>,
    epoch: u64,
    stop: CancellationToken,
) {
    let Some(mut server) = shared.connect().await else {
        return; // dropping the client resets it, as an unreachable target would
    };
    let _ = server.set_zero_linger();
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let both = async {
        tokio::try_join!(
            pump(cr, sw, Dir::Up, &shared, epoch),
            pump(sr, cw, Dir::Down, &shared, epoch)
        )
    };
    tokio::select! {
        _ = both => {}
        () = cut_of(&shared, epoch) => {}
        () = stop.cancelled() => {}
    }
    // Both streams drop here with SO_LINGER 0: the peers see a reset.
}

/// Copies `from` → `to` while the link is open; `Err` when cut or on an I/O error.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    dir: Dir,
    shared: &Shared,
    epoch: u64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut state = shared.state.subscribe();
    let mut buf = vec![0u8; BUFFER_BYTES];
    loop {
        // While stalled read nothing, so TCP flow control holds the sender.
        open(&mut state, epoch).await?;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        // A stall that began during the read holds these bytes too.
        open(&mut state, epoch).await?;
        let (pass, then_cut) = shared.take(dir, n);
        to.write_all(&buf[..pass]).await?;
        shared.forwarded[dir as usize].fetch_add(pass as u64, Ordering::SeqCst);
        if then_cut {
            shared.cut();
            return Err(cut_error());
        }
    }
}

/// Returns once the link is open; `Err` once it is cut (or the proxy is gone).
async fn open(state: &mut watch::Receiver<LinkState>, epoch: u64) -> std::io::Result<()> {
    loop {
        let s = *state.borrow_and_update();
        if s.epoch != epoch || s.mode == Mode::Cut {
            return Err(cut_error());
        }
        if s.mode == Mode::Open {
            return Ok(());
        }
        state.changed().await.map_err(|_| cut_error())?;
    }
}

/// Completes when the connection of `epoch` must close.
async fn cut_of(shared: &Shared, epoch: u64) {
    let mut state = shared.state.subscribe();
    loop {
        let s = *state.borrow_and_update();
        if s.epoch != epoch || s.mode == Mode::Cut {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the test proxy")
}

#[tokio::test]
async fn proxy_forwards_counts_stalls_and_cuts() {
    use std::time::Duration;
    use tokio::time::timeout;

    // An echo server as the target.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = Proxy::start(target).await;
    let short = Duration::from_millis(200);
    let long = Duration::from_secs(10);

    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    timeout(long, c.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(
        (proxy.forwarded(Dir::Up), proxy.forwarded(Dir::Down)),
        (5, 5)
    );

    // Stalled: nothing arrives, the connection stays; restored: the held bytes arrive.
    proxy.stall();
    c.write_all(b"abc").await.unwrap();
    let mut one = [0u8; 3];
    assert!(timeout(short, c.read_exact(&mut one)).await.is_err());
    proxy.restore();
    timeout(long, c.read_exact(&mut one))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&one, b"abc");

    // Cut after 4 more bytes up: exactly 4 pass, then the connection is reset.
    proxy.cut_after(Dir::Up, 4);
    c.write_all(b"0123456789").await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(long, c.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.len() <= 4, "{rest:?}");
    assert_eq!(proxy.forwarded(Dir::Up), 5 + 3 + 4);
    assert_eq!(proxy.mode(), Mode::Cut);

    // While cut, new connections are reset at once.
    let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
    let _ = d.write_all(b"x").await;
    let mut buf = [0u8; 1];
    let r = timeout(long, d.read(&mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(proxy.accepted(), 2);

    proxy.restore();
    let mut e = TcpStream::connect(proxy.addr()).await.unwrap();
    e.write_all(b"back").await.unwrap();
    let mut back = [0u8; 4];
    timeout(long, e.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"back");

    // Dropped: the listener is gone.
    let addr = proxy.addr();
    drop(proxy);
    timeout(long, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}
