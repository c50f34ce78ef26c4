//! A fault-injecting TCP proxy on loopback, for `cargo xtask chaos` and the client's tests.
//!
//! [`FaultProxy`] listens on `127.0.0.1:<ephemeral>` and forwards every accepted connection to
//! one upstream address. Its [`Mode`] can be switched at any time while connections are open:
//!
//! - [`Mode::Pass`]: bytes flow unchanged.
//! - [`Mode::Latency`]: every chunk is held back for a fixed delay per direction (order kept,
//!   throughput not serialised behind the delay, like a long fat pipe).
//! - [`Mode::BlackHole`]: connections stay open but nothing is forwarded any more, in either
//!   direction: a half-open link, as when a NAT entry or a Wi-Fi association silently dies.
//!   A connection that lost a byte to the black hole stays dead even after the mode changes
//!   back (its stream is torn), so only new connections recover. New connections accepted in
//!   this mode are never connected upstream: the client sees its handshake hang.
//! - [`Mode::Refuse`]: new connections are reset at once; open ones are left alone.
//!
//! [`FaultProxy::reset_all`] aborts every open connection with a TCP RST on both sides
//! (`SO_LINGER` 0), like a crashed middlebox. Counters in [`Stats`] let tests wait for what
//! happened instead of sleeping.

// A small library shared with crates/client's tests: not every knob is used by the drill.
#![allow(dead_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward unchanged.
    #[default]
    Pass,
    /// Delay each chunk: `up` from client to upstream, `down` from upstream to client.
    Latency {
        /// Added delay, client → upstream.
        up: Duration,
        /// Added delay, upstream → client.
        down: Duration,
    },
    /// Keep connections open but forward nothing (half-open links).
    BlackHole,
    /// Reset new connections at once.
    Refuse,
}

/// Counters of what the proxy has done, for tests and the chaos report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted from clients (refused ones included).
    pub accepted: u64,
    /// Connections reset at accept time in [`Mode::Refuse`].
    pub refused: u64,
    /// Connections currently open.
    pub open: u64,
    /// Connections aborted with RST by [`FaultProxy::reset_all`].
    pub reset: u64,
    /// Bytes forwarded (both directions).
    pub forwarded_bytes: u64,
    /// Bytes swallowed by the black hole (both directions).
    pub dropped_bytes: u64,
}

/// A running proxy. Dropping it stops accepting and resets every open connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// State shared by the accept loop, every connection task and the handle.
struct Shared {
    upstream: SocketAddr,
    /// The current mode; connection tasks read it per chunk.
    mode: watch::Sender<Mode>,
    /// Bumped by `reset_all`; every connection task watches it and aborts on a change.
    reset: watch::Sender<u64>,
    /// Set when the handle is dropped: the accept loop ends.
    stop: watch::Sender<bool>,
    /// Counters; a watch so tests can `wait_for` a condition.
    stats: watch::Sender<Stats>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port forwarding to `upstream`, in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream).await
    }

    /// Starts a proxy listening on `listen` (port 0: ephemeral) forwarding to `upstream`.
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(Mode::Pass),
            reset: watch::Sender::new(0),
            stop: watch::Sender::new(false),
            stats: watch::Sender::new(Stats::default()),
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Switches the mode; open connections follow from their next chunk on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Aborts every open connection with a TCP RST to both the client and the upstream.
    pub fn reset_all(&self) {
        self.shared.reset.send_modify(|generation| *generation += 1);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        *self.shared.stats.borrow()
    }

    /// Waits until `pred` holds for the counters, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Stats) -> bool,
    ) -> Result<Stats, Stats> {
        let mut rx = self.shared.stats.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await {
            Ok(Ok(stats)) => Ok(*stats),
            _ => Err(self.stats()),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let Ok((client, _peer)) = accepted else {
            // Accept errors (EMFILE, aborted handshakes) are transient; keep serving.
            continue;
        };
        let _ = client.set_nodelay(true); // Latency matters more than packet count here.
        shared.stats.send_modify(|s| s.accepted += 1);
        match *shared.mode.borrow() {
            Mode::Refuse => {
                shared.stats.send_modify(|s| s.refused += 1);
                abort(&client);
                continue;
            }
            Mode::BlackHole => {
                tokio::spawn(swallow(client, Arc::clone(&shared)));
                continue;
            }
            Mode::Pass | Mode::Latency { .. } => {}
        }
        tokio::spawn(serve(client, Arc::clone(&shared)));
    }
}

/// Drops the socket with `SO_LINGER` 0 so the kernel sends RST instead of FIN.
fn abort(stream: &TcpStream) {
    // If setting the option fails the socket is closed with a FIN instead; still a close.
    let _ = stream.set_zero_linger();
}

/// Tracks one open connection in the counters for its lifetime.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.stats.send_modify(|s| s.open += 1);
        Self(Arc::clone(shared))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.send_modify(|s| s.open -= 1);
    }
}

/// A connection accepted during a black hole: never connected upstream, its bytes vanish.
async fn swallow(mut client: TcpStream, shared: Arc<Shared>) {
    let _open = OpenGuard::new(&shared);
    let mut reset = shared.reset.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => shared.stats.send_modify(|s| s.dropped_bytes += n as u64),
            },
            _ = reset.changed() => {
                shared.stats.send_modify(|s| s.reset += 1);
                abort(&client);
                return;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let _open = OpenGuard::new(&shared);
    let mut reset = shared.reset.subscribe();
    reset.mark_unchanged();
    let upstream = tokio::select! {
        connected = TcpStream::connect(shared.upstream) => connected,
        _ = reset.changed() => {
            shared.stats.send_modify(|s| s.reset += 1);
            abort(&client);
            return;
        }
    };
    let upstream = match upstream {
        Ok(stream) => stream,
        Err(_) => {
            // The upstream is down: pass that on as abruptly as a refused connection would be.
            abort(&client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true); // As for the client side.

    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // Once a byte is lost to the black hole the stream is torn: stay dead in both directions.
    let poisoned = AtomicBool::new(false);
    let outcome = {
        let up = pump(
            &mut client_read,
            &mut upstream_write,
            Direction::Up,
            &shared,
            &poisoned,
        );
        let down = pump(
            &mut upstream_read,
            &mut client_write,
            Direction::Down,
            &shared,
            &poisoned,
        );
        tokio::select! {
            pumped = async { tokio::try_join!(up, down) } => match pumped {
                Ok(_) => Outcome::Closed,
                Err(_) => Outcome::Failed,
            },
            _ = reset.changed() => Outcome::Reset,
        }
    };
    match outcome {
        Outcome::Closed => {}
        Outcome::Failed | Outcome::Reset => {
            if matches!(outcome, Outcome::Reset) {
                shared.stats.send_modify(|s| s.reset += 1);
            }
            // Pass an abrupt end on abruptly to both sides.
            for stream in [client_write.as_ref(), upstream_write.as_ref()] {
                abort(stream);
            }
        }
    }
    // `forget`: a dropped write half would send a FIN first, and the peer would see a clean
    // end before the RST. A clean end already shut the write halves down in `pump`.
    client_write.forget();
    upstream_write.forget();
    drop((client_read, upstream_read));
}

enum Outcome {
    Closed,
    Failed,
    Reset,
}

/// Copies one direction until EOF, applying the mode to each chunk. Reading and (delayed)
/// writing run concurrently, joined by a bounded queue, so latency does not cut throughput.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    shared: &Shared,
    poisoned: &AtomicBool,
) -> io::Result<()> {
    // Bounded: a slow upstream pushes back on the reader instead of growing memory.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(());
            }
            let mode = *shared.mode.borrow();
            let delay = match mode {
                _ if poisoned.load(Ordering::Relaxed) => None,
                Mode::BlackHole => {
                    poisoned.store(true, Ordering::Relaxed);
                    None
                }
                Mode::Pass | Mode::Refuse => Some(Duration::ZERO),
                Mode::Latency { up, down } => Some(match direction {
                    Direction::Up => up,
                    Direction::Down => down,
                }),
            };
            let Some(delay) = delay else {
                shared.stats.send_modify(|s| s.dropped_bytes += n as u64);
                continue;
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return Ok(()); // The writer ended with an error, reported by it.
            }
        }
    };
    let writer = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
            shared
                .stats
                .send_modify(|s| s.forwarded_bytes += chunk.len() as u64);
        }
        // The reader saw EOF: half-close this direction, like the peer did.
        to.shutdown().await
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// An upstream that echoes everything and counts the bytes it received.
    async fn echo_server() -> (SocketAddr, watch::Receiver<u64>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(async move {
            let tx = Arc::new(tx);
            while let Ok((mut sock, _)) = listener.accept().await {
                let tx = Arc::clone(&tx);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tx.send_modify(|c| *c += n as u64);
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn roundtrip(sock: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
        sock.write_all(payload).await.unwrap();
        let mut got = vec![0u8; payload.len()];
        tokio::time::timeout(WAIT, sock.read_exact(&mut got))
            .await
            .expect("echo within the wait")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn passes_bytes_both_ways() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut sock, b"hello").await, b"hello");
        let stats = proxy.stats();
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.forwarded_bytes, 10);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut sock, b"warm").await, b"warm");
        proxy.set_mode(Mode::Latency {
            up: Duration::from_millis(60),
            down: Duration::from_millis(90),
        });
        let started = std::time::Instant::now();
        assert_eq!(roundtrip(&mut sock, b"slow").await, b"slow");
        // A lower bound only: the delay is added, never subtracted.
        assert!(started.elapsed() >= Duration::from_millis(150));
        proxy.set_mode(Mode::Pass);
        assert_eq!(roundtrip(&mut sock, b"fast").await, b"fast");
    }

    #[tokio::test]
    async fn black_hole_keeps_connections_open_and_forwards_nothing() {
        let (upstream, received) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut sock, b"ok").await, b"ok");
        proxy.set_mode(Mode::BlackHole);
        sock.write_all(b"lost").await.unwrap();
        proxy
            .wait_for(WAIT, |s| s.dropped_bytes == 4)
            .await
            .expect("the black hole swallows the chunk");
        assert_eq!(*received.borrow(), 2, "nothing reached the upstream");
        assert_eq!(proxy.stats().open, 1, "the connection is still open");

        // The torn connection stays dead after the mode changes back…
        proxy.set_mode(Mode::Pass);
        sock.write_all(b"more").await.unwrap();
        proxy
            .wait_for(WAIT, |s| s.dropped_bytes == 8)
            .await
            .expect("a poisoned connection keeps swallowing");
        assert_eq!(*received.borrow(), 2);
        // …while a new one works.
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut fresh, b"new").await, b"new");
    }

    #[tokio::test]
    async fn black_hole_hangs_new_connections() {
        let (upstream, received) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        proxy.set_mode(Mode::BlackHole);
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        sock.write_all(b"hello?").await.unwrap();
        proxy
            .wait_for(WAIT, |s| s.dropped_bytes == 6)
            .await
            .expect("swallowed");
        assert_eq!(*received.borrow(), 0);
        proxy.reset_all();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, sock.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
    }

    #[tokio::test]
    async fn reset_all_sends_rst() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut a, b"a").await, b"a");
        assert_eq!(roundtrip(&mut b, b"b").await, b"b");
        proxy.reset_all();
        for sock in [&mut a, &mut b] {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(WAIT, sock.read(&mut buf))
                .await
                .unwrap();
            assert_eq!(
                read.map_err(|e| e.kind()),
                Err(io::ErrorKind::ConnectionReset)
            );
        }
        let stats = proxy.wait_for(WAIT, |s| s.open == 0).await.expect("closed");
        assert_eq!(stats.reset, 2);
        // The proxy itself keeps working.
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"c").await, b"c");
    }

    #[tokio::test]
    async fn refuse_resets_new_connections_only() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut old, b"x").await, b"x");
        proxy.set_mode(Mode::Refuse);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, refused.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
        assert_eq!(proxy.stats().refused, 1);
        assert_eq!(roundtrip(&mut old, b"y").await, b"y");
    }

    #[tokio::test]
    async fn upstream_down_resets_the_client() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let dead = listener.local_addr().unwrap();
        drop(listener);
        let proxy = FaultProxy::start(dead).await.unwrap();
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, sock.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
    }
}
