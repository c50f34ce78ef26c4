//! `cargo xtask bench`: a load generator of our own against the real `tether` binary over
//! loopback.
//!
//! The server runs as a child process (its own fd budget and its own RSS, read from
//! `/proc/<pid>/status`); this process is the load generator. It measures:
//!
//! 1. connection set-up rate: WebSocket upgrade + `hello` → `welcome`, with a fixed number of
//!    attempts in flight;
//! 2. publish → deliver throughput and latency (p50/p99) with 1, 100 and 1,000 subscribers on
//!    one channel: one publisher keeps a window of publishes in flight, every message carries
//!    its send time, every subscriber records the delay at arrival;
//! 3. server memory per idle, authenticated, subscribed connection at 10,000 connections, the
//!    client sockets spread over several `127.0.0.x` source addresses so no source runs out of
//!    ports.
//!
//! The server is built with `--release` unless `--debug` is given; `--smoke` is a tiny run
//! for `cargo xtask test` (debug build, small counts) that only checks the numbers come out.
//! Figures and commands are in `docs/benchmarks.md`.
use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A secret for the benchmark's throw-away server (never a real one).
const SECRET: &str = "tether-bench-secret-0123456789abcdef0123456789";
/// Publishes the publisher keeps in flight (unacknowledged).
const WINDOW: usize = 256;
/// Upgrades in flight while opening many connections.
const CONNECT_CONCURRENCY: usize = 64;
/// Source addresses for the idle connections: 127.0.0.2 ..= 127.0.0.(1 + SOURCES).
const SOURCES: u8 = 8;

/// `cargo xtask bench` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A tiny run (debug build, small counts) that only checks the benchmark works.
    #[arg(long)]
    smoke: bool,
    /// Benchmark a debug build instead of `--release`.
    #[arg(long)]
    debug: bool,
    /// Idle connections for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Messages published per fan-out scenario (fewer with 1,000 subscribers).
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Connections opened for the set-up rate.
    #[arg(long, default_value_t = 2_000)]
    setups: usize,
    /// Run only these scenarios (`setup`, `fanout`, `memory`); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The `cargo xtask test` step: a tiny run on the debug build the tests step already made, so
/// the benchmark cannot rot between real runs (figures from it mean nothing).
pub fn test_step() -> Result<()> {
    run(Args {
        smoke: true,
        debug: true,
        idle: 0,
        messages: 0,
        setups: 0,
        only: Vec::new(),
    })
}

type Ws = WebSocketStream<tokio::net::TcpStream>;

pub fn run(args: Args) -> Result<()> {
    let (release, idle, messages, setups, fanouts) = if args.smoke {
        (false, 50, 200, 50, vec![1, 10])
    } else {
        (
            !args.debug,
            args.idle,
            args.messages,
            args.setups,
            vec![1, 100, 1_000],
        )
    };
    let exe = build(release)?;
    let dir = tempfile::tempdir().context("a temporary folder for the store")?;
    let server = Server::start(&exe, dir.path(), idle + 100)?;
    let token = server.token(&exe, dir.path())?;
    println!(
        "bench: tether ({}) pid {} on {}",
        if release { "release" } else { "debug" },
        server.pid(),
        server.addr
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("the load generator's runtime")?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let (do_setup, do_fanout, do_memory) = (wanted("setup"), wanted("fanout"), wanted("memory"));
    let result = runtime.block_on(async {
        if do_setup {
        let setup = setup_rate(server.addr, &token, setups).await?;
        println!(
            "setup: {setups} connections (upgrade + hello → welcome, {CONNECT_CONCURRENCY} in flight): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            setup.rate, setup.p50_ms, setup.p99_ms
        );
        }
        for &subscribers in fanouts.iter().filter(|_| do_fanout) {
            let count = if subscribers >= 1_000 {
                messages / 5
            } else {
                messages
            };
            let f = fanout(server.addr, &token, subscribers, count, None).await?;
            println!(
                "fanout: {subscribers} subscriber(s) × {count} messages, saturated ({WINDOW} in flight): publish {:.0} msg/s, deliver {:.0} msg/s, latency p50 {:.2} ms, p99 {:.2} ms",
                f.publish_rate, f.deliver_rate, f.p50_ms, f.p99_ms
            );
            // Latency without queueing: a steady rate well below saturation.
            let rate = (100_000 / subscribers).clamp(20, 1_000);
            let paced = (rate * 2).min(count);
            let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1_000);
            let p = fanout(server.addr, &token, subscribers, paced, Some(interval)).await?;
            println!(
                "fanout: {subscribers} subscriber(s) × {paced} messages, paced at {rate} msg/s: latency p50 {:.2} ms, p99 {:.2} ms",
                p.p50_ms, p.p99_ms
            );
        }
        if !do_memory {
            return anyhow::Ok(());
        }
        let m = idle_memory(&server, &token, idle).await?;
        println!(
            "memory: {idle} idle subscribed connections: server RSS {:.1} MiB at {} → {:.1} MiB at {idle}, {:.2} KiB per added connection",
            m.before_kib as f64 / 1024.0,
            (idle / 10).max(1),
            m.after_kib as f64 / 1024.0,
            m.per_connection_kib
        );
        anyhow::Ok(())
    });
    drop(server);
    result
}

fn build(release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", "server", "--bin", "tether"];
    if release {
        args.push("--release");
    }
    crate::util::run(&mut crate::util::cargo(args))?;
    let profile = if release { "release" } else { "debug" };
    Ok(crate::web::target_dir().join(profile).join("tether"))
}

/// The server under test, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(exe: &Path, dir: &Path, max_connections: usize) -> Result<Self> {
        let max = max_connections.to_string();
        let mut child = Command::new(exe)
            .arg("serve")
            .envs(server_env(dir))
            .env("PORT", "0")
            .env("TETHER_HOST", "127.0.0.1")
            .env("TETHER_LOG_FORMAT", "json")
            // Connection lines at info would cost the server more than the work measured.
            .env("RUST_LOG", "warn,server::cli=info")
            .env("TETHER_MAX_CONNECTIONS", &max)
            .env("TETHER_MAX_CONNECTIONS_PER_IP", &max)
            .env("TETHER_UPGRADE_BURST", "1000000")
            .env("TETHER_UPGRADE_PER_SEC", "1000000")
            .env("TETHER_PUBLISH_BURST", "1000000")
            .env("TETHER_PUBLISH_PER_SEC", "1000000")
            // Idle connections are held unread for a while; no dead-link cut meanwhile.
            .env("TETHER_HEARTBEAT_MS", "120000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["event"] == "server_started" {
                    let _ = tx.send(v["data"]["port"].as_u64());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the server did not log server_started within 30 s")?
            .context("server_started without a port")?;
        let port = u16::try_from(port).context("a port number")?;
        Ok(Self {
            child,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A token with every right, from `tether token` (the same secret as the server).
    fn token(&self, exe: &Path, dir: &Path) -> Result<String> {
        let out = Command::new(exe)
            .args([
                "token",
                "--sub",
                "bench",
                "--subscribe",
                "*",
                "--publish",
                "*",
            ])
            .args(["--ttl", "86400"])
            .envs(server_env(dir))
            .output()
            .context("tether token")?;
        if !out.status.success() {
            bail!(
                "tether token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// Resident memory of the server, KiB.
    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading the server's /proc status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("bench.db").display()),
        ),
        ("TETHER_JWT_SECRET", SECRET.to_owned()),
    ]
}

/// Small client buffers: the load generator holds thousands of sockets too.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Upgrade from `source` (port chosen by the OS), then `hello` → `welcome`.
async fn connect(addr: SocketAddr, source: Ipv4Addr, token: &str) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(addr).await?;
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = client_async_with_config(url, stream, Some(client_config())).await?;
    let hello = serde_json::json!({"type":"hello","token":token,"client":"bench/0"});
    ws.send(Message::text(hello.to_string())).await?;
    let reply = expect_text(&mut ws).await?;
    if reply["type"] != "welcome" {
        bail!("expected welcome, got {reply}");
    }
    Ok(ws)
}

async fn expect_text(ws: &mut Ws) -> Result<serde_json::Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no frame within 30 s")?
            .context("the server closed the connection")??;
        match msg {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str())?),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

async fn subscribe(ws: &mut Ws, channel: &str) -> Result<()> {
    let frame = serde_json::json!({"type":"subscribe","channel":channel});
    ws.send(Message::text(frame.to_string())).await?;
    let reply = expect_text(ws).await?;
    if reply["type"] != "subscribed" {
        bail!("expected subscribed, got {reply}");
    }
    Ok(())
}

fn source(i: usize) -> Ipv4Addr {
    let n = u8::try_from(i % usize::from(SOURCES)).expect("below SOURCES");
    Ipv4Addr::new(127, 0, 0, 2 + n)
}

/// Opens `count` connections with `CONNECT_CONCURRENCY` in flight, keeping each as `keep` says.
async fn open_many(
    addr: SocketAddr,
    token: &str,
    count: usize,
    channel: Option<Arc<dyn Fn(usize) -> String + Send + Sync>>,
) -> Result<(Vec<Ws>, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let token: Arc<str> = Arc::from(token);
    let mut workers = Vec::new();
    for _ in 0..CONNECT_CONCURRENCY.min(count) {
        let next = next.clone();
        let token = token.clone();
        let channel = channel.clone();
        workers.push(tokio::spawn(async move {
            let mut opened = Vec::new();
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let started = Instant::now();
                let mut ws = connect(addr, source(i), &token).await?;
                times.push(started.elapsed());
                if let Some(channel) = &channel {
                    subscribe(&mut ws, &channel(i)).await?;
                }
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

struct Setup {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn setup_rate(addr: SocketAddr, token: &str, count: usize) -> Result<Setup> {
    let started = Instant::now();
    let (conns, mut times) = open_many(addr, token, count, None).await?;
    let elapsed = started.elapsed();
    close_all(conns).await;
    times.sort_unstable();
    Ok(Setup {
        rate: count as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
    })
}

async fn close_all(conns: Vec<Ws>) {
    let closes = conns.into_iter().map(|mut ws| async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    });
    futures_util::future::join_all(closes).await;
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1_000.0
}

struct Fanout {
    publish_rate: f64,
    deliver_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One publisher, `subscribers` readers on one channel. Without `pace` the publisher keeps
/// [`WINDOW`] publishes in flight (throughput); with it, one publish per `pace` (latency).
async fn fanout(
    addr: SocketAddr,
    token: &str,
    subscribers: usize,
    count: usize,
    pace: Option<Duration>,
) -> Result<Fanout> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let channel = format!("bench:fanout:{subscribers}:{run}");
    let name = channel.clone();
    let (subs, _) = open_many(
        addr,
        token,
        subscribers,
        Some(Arc::new(move |_| name.clone())),
    )
    .await?;
    let epoch = Instant::now();
    let mut readers = Vec::new();
    for mut ws in subs {
        readers.push(tokio::spawn(async move {
            let mut delays = Vec::with_capacity(count);
            while delays.len() < count {
                let v = expect_text(&mut ws).await?;
                if v["type"] == "message" {
                    let sent = Duration::from_micros(v["data"]["t"].as_u64().unwrap_or(0));
                    delays.push(epoch.elapsed().saturating_sub(sent));
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(delays)
        }));
    }
    let mut publisher = connect(addr, source(0), token).await?;
    let started = Instant::now();
    let mut in_flight = 0usize;
    let mut acked = 0usize;
    let mut ticker = pace.map(tokio::time::interval);
    for n in 0..count {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        if in_flight >= WINDOW {
            acked += wait_acks(&mut publisher, 1).await?;
            in_flight -= 1;
        }
        let t = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let frame = serde_json::json!({"type":"publish","id":format!("b{n}"),"channel":channel,"data":{"t":t}});
        publisher.feed(Message::text(frame.to_string())).await?;
        if pace.is_some() || n % 32 == 31 {
            publisher.flush().await?;
        }
        in_flight += 1;
    }
    publisher.flush().await?;
    acked += wait_acks(&mut publisher, in_flight).await?;
    let published = started.elapsed();
    let mut delays = Vec::with_capacity(count * subscribers);
    for reader in readers {
        delays.extend(reader.await??);
    }
    let delivered = started.elapsed();
    let _ = publisher.close(None).await;
    if acked != count {
        bail!("{acked} acks for {count} publishes");
    }
    delays.sort_unstable();
    Ok(Fanout {
        publish_rate: count as f64 / published.as_secs_f64(),
        deliver_rate: (count * subscribers) as f64 / delivered.as_secs_f64(),
        p50_ms: percentile(&delays, 0.50),
        p99_ms: percentile(&delays, 0.99),
    })
}

async fn wait_acks(ws: &mut Ws, n: usize) -> Result<usize> {
    let mut got = 0;
    while got < n {
        let v = expect_text(ws).await?;
        match v["type"].as_str() {
            Some("ack") => got += 1,
            Some("nack") => bail!("publish refused: {v}"),
            _ => {}
        }
    }
    Ok(got)
}

struct Memory {
    before_kib: u64,
    after_kib: u64,
    per_connection_kib: f64,
}

/// RSS growth per connection between 10 % and 100 % of `count` idle, authenticated,
/// subscribed connections: the marginal cost of one more, without the one-time growth of
/// allocator arenas and tables that the first connections pay for.
async fn idle_memory(server: &Server, token: &str, count: usize) -> Result<Memory> {
    let channel: Arc<dyn Fn(usize) -> String + Send + Sync> =
        Arc::new(|i| format!("bench:idle:{}", i % 100));
    let first = (count / 10).max(1);
    let (mut conns, _) = open_many(server.addr, token, first, Some(channel.clone())).await?;
    // Let the server settle (its per-connection tasks park on their sockets).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kib = server.rss_kib()?;
    let (rest, _) = open_many(server.addr, token, count - first, Some(channel)).await?;
    conns.extend(rest);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kib = server.rss_kib()?;
    close_all(conns).await;
    Ok(Memory {
        before_kib,
        after_kib,
        per_connection_kib: after_kib.saturating_sub(before_kib) as f64 / (count - first) as f64,
    })
}
