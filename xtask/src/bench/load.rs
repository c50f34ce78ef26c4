//! The load generator's building blocks: WebSocket clients over loopback (tokio-tungstenite),
//! spread over several `127.0.0.x` source addresses so no source runs out of ports, the
//! Tether handshake, a light read of the send time carried in a delivery, percentiles, and
//! the generator's own CPU use.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// Upgrades in flight while opening many connections.
pub const CONNECT_CONCURRENCY: usize = 64;
/// Source addresses: 127.0.0.2 ..= 127.0.0.(1 + SOURCES).
const SOURCES: u8 = 8;

/// One client connection.
pub type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Small client buffers: the load generator holds thousands of sockets too.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// The `i`-th source address.
pub fn source(i: usize) -> Ipv4Addr {
    let n = u8::try_from(i % usize::from(SOURCES)).expect("below SOURCES");
    Ipv4Addr::new(127, 0, 0, 2 + n)
}

/// TCP connect from `source` (port chosen by the OS) and WebSocket upgrade of `path`.
pub async fn upgrade(addr: SocketAddr, source: Ipv4Addr, path: &str) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) = client_async_with_config(url, stream, Some(client_config())).await?;
    Ok(ws)
}

/// Upgrade of `/ws`, then `hello` → `welcome`.
pub async fn connect(addr: SocketAddr, source: Ipv4Addr, token: &str) -> Result<Ws> {
    let mut ws = upgrade(addr, source, "/ws").await?;
    let hello = serde_json::json!({"type":"hello","token":token,"client":"bench/0"});
    ws.send(Message::text(hello.to_string())).await?;
    let reply = expect_text(&mut ws).await?;
    if reply["type"] != "welcome" {
        bail!("expected welcome, got {reply}");
    }
    Ok(ws)
}

/// The next text frame, decoded (30 s at most).
pub async fn expect_text(ws: &mut Ws) -> Result<serde_json::Value> {
    let text = next_text(ws).await?;
    Ok(serde_json::from_str(text.as_str())?)
}

/// The next text frame, as text (30 s at most).
pub async fn next_text(ws: &mut Ws) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no frame within 30 s")?
            .context("the server closed the connection")??;
        match msg {
            Message::Text(t) => return Ok(t),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// `subscribe` → `subscribed`.
pub async fn subscribe(ws: &mut Ws, channel: &str) -> Result<()> {
    let frame = serde_json::json!({"type":"subscribe","channel":channel});
    ws.send(Message::text(frame.to_string())).await?;
    let reply = expect_text(ws).await?;
    if reply["type"] != "subscribed" {
        bail!("expected subscribed, got {reply}");
    }
    Ok(())
}

/// How to open one connection of a crowd: Tether (`hello`, optionally a subscribe to the
/// channel named for index `i`) or a peer path (upgrade only).
#[derive(Clone)]
pub enum Open {
    /// Tether with this token, subscribing as the function says.
    Tether {
        /// The token.
        token: Arc<str>,
        /// The channel to subscribe connection `i` to, if any.
        channel: Option<Arc<dyn Fn(usize) -> String + Send + Sync>>,
    },
    /// A bare or Node peer: upgrade of this path only.
    Peer(&'static str),
}

impl Open {
    /// Opens connection number `i`.
    pub async fn open(&self, addr: SocketAddr, i: usize) -> Result<Ws> {
        match self {
            Self::Tether { token, channel } => {
                let mut ws = connect(addr, source(i), token).await?;
                if let Some(channel) = channel {
                    subscribe(&mut ws, &channel(i)).await?;
                }
                Ok(ws)
            }
            Self::Peer(path) => upgrade(addr, source(i), path).await,
        }
    }
}

/// Opens `count` connections with [`CONNECT_CONCURRENCY`] in flight; returns them and the
/// set-up time of each.
pub async fn open_many(
    addr: SocketAddr,
    how: &Open,
    count: usize,
) -> Result<(Vec<Ws>, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONNECT_CONCURRENCY.min(count) {
        let next = next.clone();
        let how = how.clone();
        workers.push(tokio::spawn(async move {
            let mut opened = Vec::new();
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let started = Instant::now();
                let ws = how.open(addr, i).await?;
                times.push(started.elapsed());
                opened.push(ws);
            }
            anyhow::Ok((opened, times))
        }));
    }
    let mut all = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    for worker in workers {
        let (opened, t) = worker.await??;
        all.extend(opened);
        times.extend(t);
    }
    Ok((all, times))
}

/// Closes every connection (5 s each at most, all at once).
pub async fn close_all(conns: Vec<Ws>) {
    let closes = conns.into_iter().map(|mut ws| async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    });
    futures_util::future::join_all(closes).await;
}

/// The `q` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1_000.0
}

/// The send time (µs since the run's epoch) a delivery carries as `"t":N`, read without a
/// JSON decode: the load generator reads a thousand copies of every message, and a full
/// decode of each made it the bottleneck. The benchmark's frames have exactly one `"t":`
/// (Tether's other keys are `type`, `channel`, `offset`, `id`, `data`, `published_at`).
pub fn sent_micros(frame: &str) -> Option<u64> {
    let at = frame.find("\"t\":")? + 4;
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    frame[at..at + digits].parse().ok()
}

/// Whether a Tether frame is a `message` delivery (the server writes `type` first).
pub fn is_delivery(frame: &str) -> bool {
    frame.starts_with(r#"{"type":"message""#)
}

/// CPU time of this process (user + system), from `/proc/self/stat`.
pub fn own_cpu() -> Duration {
    // Fields 14 and 15 (utime, stime) in clock ticks, after the parenthesised name.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux for every architecture we run on.
    Duration::from_millis(ticks * 10)
}

/// Measures the load generator's CPU share over a stretch of wall time.
pub struct CpuMeter {
    cpu: Duration,
    wall: Instant,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start() -> Self {
        Self {
            cpu: own_cpu(),
            wall: Instant::now(),
        }
    }

    /// CPU time used since [`CpuMeter::start`] ÷ wall time, in percent of one core.
    pub fn percent(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        own_cpu().saturating_sub(self.cpu).as_secs_f64() / wall * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_without_a_decode() {
        let frame = r#"{"type":"message","channel":"bench:1","offset":3,"id":"b2","data":{"t":123456},"published_at":"2026-01-01T00:00:00Z"}"#;
        assert!(is_delivery(frame));
        assert_eq!(sent_micros(frame), Some(123_456));
        assert_eq!(sent_micros(r#"{"t":7}"#), Some(7));
        assert_eq!(sent_micros(r#"{"type":"ack"}"#), None);
        assert_eq!(sent_micros(r#"{"t":"x"}"#), None);
        assert!(!is_delivery(r#"{"type":"ack","id":"b1"}"#));
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert!((percentile(&d, 0.5) - 51.0).abs() < 1e-9);
        assert!((percentile(&d, 0.99) - 99.0).abs() < 1e-9);
        assert!(percentile(&[], 0.5).abs() < 1e-9);
    }
}
