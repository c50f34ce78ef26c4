//! `cargo xtask chaos`: the connection-recovery drill of CONTRACT §9.
//!
//! Builds and starts the real `tether` on a temporary database; runs N clients of
//! `crates/client` (default 50) that publish continuously on a few channels and subscribe to
//! them from offset 0; SIGKILLs and SIGTERMs the server several times, restarting it on the
//! same database and port; and routes some clients through fault-injecting proxies
//! (`faultproxy.rs`): added latency with spikes, black holes that leave links half-open, and
//! abrupt resets. Then it lets everything settle and checks, against the clients' records
//! and the server's history (`GET /v1/channels/{c}/messages`):
//!
//! - **lost**: an acknowledged message missing from the history, or that some subscriber of
//!   its channel never received;
//! - **duplicated**: a subscriber handed the same offset twice (or out of order), or one
//!   publish id stored at two offsets.
//!
//! It prints a table (sent, acknowledged, delivered, lost, duplicated, reconnect time
//! p50/p99) and exits non-zero on any loss, duplicate or unfinished publish. `--smoke` is the
//! short version `cargo xtask test` runs.

mod fleet;
// Public to the crate: `js test` runs its Node tests against the same built binary.
pub mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::faultproxy::{FaultProxy, Mode};
use fleet::{CancelFlag, Ledger, Member, Plan, lock};
use server::{Kill, Server};

/// Arguments of `cargo xtask chaos`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// How long clients publish, seconds (the settling afterwards is extra).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Server kills over the drill, alternating SIGKILL and SIGTERM (at least 5 in the full run).
    #[arg(long, default_value_t = 6)]
    pub kills: u32,
    /// Seed of the drill's randomness (kill times, client jitter); printed so a run can be
    /// repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Server port (0: a free ephemeral one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Publishes per second per client.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Channels the clients share.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// Also write the result table as Markdown into this file (e.g. docs/reliability.md).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// The short version run by `cargo xtask test`: 6 clients, 2 kills, 15 s of publishing.
    #[arg(long)]
    pub smoke: bool,
}

/// Runs the drill.
pub fn run(mut args: Args) -> Result<()> {
    if args.smoke {
        args.clients = args.clients.min(6);
        args.duration = args.duration.min(15);
        args.kills = args.kills.min(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(drill(args))
}

/// The chaos step of `cargo xtask test`: the short drill.
pub fn test_step() -> Result<()> {
    run(Args {
        clients: 6,
        duration: 15,
        kills: 2,
        seed: None,
        port: 0,
        rate: 2.0,
        channels: 2,
        report: None,
        smoke: true,
    })
}

/// The server's heartbeat in the drill: short, so black holes are detected within seconds.
const HEARTBEAT_MS: u64 = 1_000;
/// How long everything may take to settle after publishing stops.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A small deterministic RNG (splitmix64) for the drill's schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // 53 random bits are plenty.
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x
    }
}

/// One scheduled disturbance.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill(Kill),
    BlackHole,
    Reset,
    LatencySpike,
}

async fn drill(args: Args) -> Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng(seed);
    let command = command_line(&args, seed);
    println!("chaos: {command}");

    let bin = server::build()?;
    let dir = tempfile::tempdir().context("creating the drill's temp dir")?;
    let mut server = Server::new(&bin, dir.path(), args.port, HEARTBEAT_MS)?;
    let took = server.start().await?;
    println!(
        "chaos: tether pid {} on {} ready in {took:.1?} (log {})",
        server.pid().unwrap_or(0),
        server.addr(),
        server.log().display()
    );

    // The proxies: clients 0, 1, 2 (mod 5) go through latency, black-hole and reset proxies.
    let latency = Arc::new(FaultProxy::start(server.addr()).await?);
    let base_latency = Mode::Latency {
        up: Duration::from_millis(20),
        down: Duration::from_millis(60),
    };
    latency.set_mode(base_latency);
    let blackhole = Arc::new(FaultProxy::start(server.addr()).await?);
    let resets = FaultProxy::start(server.addr()).await?;
    let direct = format!("ws://{}/ws", server.addr());
    let via = |p: &FaultProxy| format!("ws://{}/ws", p.addr());

    let channels: Vec<String> = (0..args.channels.max(1))
        .map(|c| format!("chaos:{c}"))
        .collect();
    let ledger = fleet::Shared::default();
    let stop = CancelFlag::default();
    let mut members = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let (url, route) = match index % 5 {
            0 => (via(&latency), "latency proxy"),
            1 => (via(&blackhole), "black-hole proxy"),
            2 => (via(&resets), "reset proxy"),
            _ => (direct.clone(), "direct"),
        };
        let n = channels.len();
        let plan = Plan {
            index,
            url,
            token: server.token(&format!("chaos-{index}"), 3 * 3600)?,
            publish_to: channels[index % n].clone(),
            subscribe_to: if n == 1 {
                vec![channels[0].clone()]
            } else {
                vec![
                    channels[index % n].clone(),
                    channels[(index + 1) % n].clone(),
                ]
            },
            rate: args.rate,
            seed: rng.next(),
            route,
        };
        members.push(Member::start(plan, ledger.clone(), stop.clone()).await?);
    }
    println!(
        "chaos: {} clients on {} channels ({} via latency, {} via black-hole, {} via reset proxies), seed {seed}",
        members.len(),
        channels.len(),
        (0..args.clients).filter(|i| i % 5 == 0).count(),
        (0..args.clients).filter(|i| i % 5 == 1).count(),
        (0..args.clients).filter(|i| i % 5 == 2).count(),
    );

    // The schedule: kills spread over the run with jitter, network faults in between.
    let duration = Duration::from_secs(args.duration.max(5));
    let mut schedule: Vec<(Duration, Fault)> = Vec::new();
    let kills = args.kills.max(1);
    for k in 0..kills {
        let slot = duration.as_secs_f64() * 0.85 / f64::from(kills);
        let at = slot * (f64::from(k) + 0.5 + (rng.unit() - 0.5) * 0.4);
        let kill = if k % 2 == 0 {
            Kill::Hard
        } else {
            Kill::Graceful
        };
        schedule.push((Duration::from_secs_f64(at + 1.0), Fault::Kill(kill)));
    }
    let net_faults = (duration.as_secs() / 5).max(3);
    let kill_times: Vec<f64> = schedule.iter().map(|(at, _)| at.as_secs_f64()).collect();
    for f in 0..net_faults {
        // Away from the kills, so the fault meets live connections rather than a dead server.
        let mut at = duration.as_secs_f64() * 0.8 * rng.unit();
        for _ in 0..20 {
            if kill_times.iter().all(|k| (k - at).abs() > 2.5) {
                break;
            }
            at = duration.as_secs_f64() * 0.8 * rng.unit();
        }
        let fault = match f % 3 {
            0 => Fault::BlackHole,
            1 => Fault::Reset,
            _ => Fault::LatencySpike,
        };
        schedule.push((Duration::from_secs_f64(at), fault));
    }
    schedule.sort_by_key(|(at, _)| *at);

    let started = Instant::now();
    let mut restarts = Vec::new();
    let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
    for (at, fault) in schedule {
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        match fault {
            Fault::Kill(kill) => {
                let status = server.kill(kill).await?;
                let took = server.start().await?;
                restarts.push(took);
                *counts.entry(kill.name()).or_default() += 1;
                println!(
                    "chaos: {:>5.1}s {} ({status}), back in {took:.1?}",
                    started.elapsed().as_secs_f64(),
                    kill.name()
                );
            }
            Fault::BlackHole => {
                // Longer than 2.5 heartbeats: the clients behind it must notice by themselves.
                blackhole.set_mode(Mode::BlackHole);
                let proxy = Arc::clone(&blackhole);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 4)).await;
                    proxy.set_mode(Mode::Pass);
                });
                *counts.entry("black holes").or_default() += 1;
                println!(
                    "chaos: {:>5.1}s black hole for {} ms",
                    started.elapsed().as_secs_f64(),
                    HEARTBEAT_MS * 4
                );
            }
            Fault::Reset => {
                resets.reset_all();
                *counts.entry("connection resets").or_default() += 1;
                println!(
                    "chaos: {:>5.1}s RST on every proxied connection",
                    started.elapsed().as_secs_f64()
                );
            }
            Fault::LatencySpike => {
                latency.set_mode(Mode::Latency {
                    up: Duration::from_millis(150),
                    down: Duration::from_millis(250),
                });
                let proxy = Arc::clone(&latency);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    proxy.set_mode(base_latency);
                });
                *counts.entry("latency spikes").or_default() += 1;
                println!(
                    "chaos: {:>5.1}s latency spike (+400 ms round trip) for 3 s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    if let Some(rest) = duration.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stop.raise();
    blackhole.set_mode(Mode::Pass);
    latency.set_mode(base_latency);
    println!(
        "chaos: publishing stopped after {:.1?}; settling",
        started.elapsed()
    );

    // Settle: every publish finished, every subscriber caught up with the history.
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    while !members.iter().all(Member::settled) && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reader = server.token("chaos-reader", 3600)?;
    let mut history: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for channel in &channels {
        history.insert(
            channel.clone(),
            fetch_history(&server, channel, &reader).await?,
        );
    }
    let latest: HashMap<&str, u64> = history
        .iter()
        .map(|(c, h)| (c.as_str(), h.last().map_or(0, |(o, _)| *o)))
        .collect();
    loop {
        let caught_up = {
            let l = lock(&ledger);
            members.iter().all(|m| {
                let n = channels.len();
                let subs = if n == 1 {
                    vec![channels[0].clone()]
                } else {
                    vec![
                        channels[m.index % n].clone(),
                        channels[(m.index + 1) % n].clone(),
                    ]
                };
                subs.iter().all(|c| {
                    let last = l
                        .received
                        .get(&(m.index, c.clone()))
                        .and_then(|v| v.last().copied())
                        .unwrap_or(0);
                    last >= latest[c.as_str()]
                })
            })
        };
        if caught_up || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outstanding: usize = members.iter().map(Member::outstanding).sum();
    for member in members {
        member.close().await;
    }
    let swallowed = blackhole.stats().dropped_bytes;
    let rst = resets.stats().reset + blackhole.stats().reset;
    counts.insert("proxy RSTs sent", u32::try_from(rst).unwrap_or(u32::MAX));
    counts.insert(
        "bytes swallowed by black holes",
        u32::try_from(swallowed).unwrap_or(u32::MAX),
    );
    server.kill(Kill::Graceful).await?;

    let ledger = std::mem::take(&mut *lock(&ledger));
    let verdict = Verdict::compute(&ledger, &history, &channels, args.clients, outstanding);
    let table = verdict.table(&args, &counts, &restarts);
    println!("\n{table}");
    for line in verdict.problems.iter().take(20) {
        println!("chaos: {line}");
    }
    if let Some(path) = &args.report {
        let section = report_markdown(&command, &table, &verdict);
        // Keep the hand-written parts of an existing document: replace only the marked section.
        let doc = match std::fs::read_to_string(path) {
            Ok(old) => match (old.find(REPORT_START), old.find(REPORT_END)) {
                (Some(a), Some(b)) if a < b => {
                    format!("{}{REPORT_START}\n{section}{}", &old[..a], &old[b..])
                }
                _ => format!("{REPORT_START}\n{section}{REPORT_END}\n"),
            },
            Err(_) => format!("{REPORT_START}\n{section}{REPORT_END}\n"),
        };
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        println!("chaos: wrote {}", path.display());
    }
    if verdict.lost > 0 || verdict.duplicated > 0 || verdict.unfinished > 0 {
        // Keep the database and the server log for the post-mortem.
        let kept = dir.keep();
        bail!(
            "chaos: {} lost, {} duplicated, {} unfinished publishes (see above; database and server log kept in {})",
            verdict.lost,
            verdict.duplicated,
            verdict.unfinished,
            kept.display()
        );
    }
    println!("chaos: no loss, no duplicate");
    Ok(())
}

/// The command that reproduces this run.
fn command_line(args: &Args, seed: u64) -> String {
    let mut line = String::from("cargo xtask chaos");
    if args.smoke {
        line.push_str(" --smoke");
    }
    let _ = write!(
        line,
        " --clients {} --duration {} --kills {} --rate {} --channels {} --seed {seed}",
        args.clients, args.duration, args.kills, args.rate, args.channels
    );
    if let Some(report) = &args.report {
        let _ = write!(line, " --report {}", report.display());
    }
    line
}

/// The full history of `channel`, page by page.
async fn fetch_history(server: &Server, channel: &str, token: &str) -> Result<Vec<(u64, String)>> {
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let path = format!("/v1/channels/{channel}/messages?since={since}&limit=1000");
        let (status, body) = server::http_get(server.addr(), &path, Some(token)).await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        let page: protocol::http::HistoryResponse = serde_json::from_str(&body)
            .with_context(|| format!("GET {path}: not a history page"))?;
        let n = page.messages.len();
        for m in page.messages {
            since = m.message.offset;
            all.push((m.message.offset, m.message.id));
        }
        if n < 1000 {
            return Ok(all);
        }
    }
}

/// The drill's result.
struct Verdict {
    sent: u64,
    acked: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    unfinished: u64,
    resent: u64,
    resets: u64,
    failed: u64,
    outages: Vec<(&'static str, Duration)>,
    problems: Vec<String>,
}

impl Verdict {
    fn compute(
        ledger: &Ledger,
        history: &HashMap<String, Vec<(u64, String)>>,
        channels: &[String],
        clients: usize,
        outstanding: usize,
    ) -> Self {
        let mut problems = Vec::new();
        let mut lost_ids: HashSet<&str> = HashSet::new();
        let mut duplicated = 0u64;

        // The history: offsets 1..=n without gaps, each id stored once.
        let mut stored: HashMap<(&str, &str), u64> = HashMap::new();
        for (channel, messages) in history {
            let mut seen: HashMap<&str, u64> = HashMap::new();
            for (i, (offset, id)) in messages.iter().enumerate() {
                if *offset != i as u64 + 1 {
                    problems.push(format!(
                        "{channel}: history offset {offset} at position {}",
                        i + 1
                    ));
                }
                if let Some(first) = seen.insert(id.as_str(), *offset) {
                    duplicated += 1;
                    problems.push(format!("{channel}: id {id} stored at {first} and {offset}"));
                }
                stored.insert((channel.as_str(), id.as_str()), *offset);
            }
        }
        // Every acked message is in the history at its acked offset.
        for (id, (channel, offset)) in &ledger.acked {
            match stored.get(&(channel.as_str(), id.as_str())) {
                Some(o) if o == offset => {}
                Some(o) => {
                    duplicated += 1;
                    problems.push(format!("{id}: acked at {offset}, stored at {o}"));
                }
                None => {
                    lost_ids.insert(id);
                    problems.push(format!(
                        "{id}: acked at {channel}/{offset} but not in the history"
                    ));
                }
            }
        }
        // Every subscriber: offsets strictly +1 from 1, and every acked message received.
        let mut delivered = 0u64;
        let n = channels.len();
        for index in 0..clients {
            let subs = if n == 1 {
                vec![channels[0].clone()]
            } else {
                vec![
                    channels[index % n].clone(),
                    channels[(index + 1) % n].clone(),
                ]
            };
            for channel in subs {
                let empty = Vec::new();
                let got = ledger
                    .received
                    .get(&(index, channel.clone()))
                    .unwrap_or(&empty);
                delivered += got.len() as u64;
                let mut prev = 0u64;
                for &offset in got {
                    if offset <= prev {
                        duplicated += 1;
                        problems.push(format!(
                            "client {index} {channel}: offset {offset} after {prev}"
                        ));
                    } else if offset != prev + 1 {
                        problems.push(format!(
                            "client {index} {channel}: offsets {}..{} skipped",
                            prev + 1,
                            offset - 1
                        ));
                    }
                    prev = prev.max(offset);
                }
                let have: HashSet<u64> = got.iter().copied().collect();
                for (id, (c, offset)) in &ledger.acked {
                    if *c == channel && !have.contains(offset) && lost_ids.insert(id) {
                        problems.push(format!("client {index} never received {id} ({c}/{offset})"));
                    }
                }
            }
        }
        duplicated += ledger.id_mismatches;
        let unfinished = ledger
            .sent
            .saturating_sub(ledger.acked.len() as u64)
            .max(outstanding as u64);
        for e in &ledger.publish_errors {
            problems.push(format!("publish failed: {e}"));
        }
        if unfinished > 0 {
            problems.push(format!("{unfinished} publishes never acknowledged"));
        }
        Self {
            sent: ledger.sent,
            acked: ledger.acked.len() as u64,
            delivered,
            lost: lost_ids.len() as u64,
            duplicated,
            unfinished,
            resent: ledger.resent,
            resets: ledger.resets,
            failed: ledger.failed,
            outages: ledger.outages.clone(),
            problems,
        }
    }

    fn table(
        &self,
        args: &Args,
        counts: &BTreeMap<&'static str, u32>,
        restarts: &[Duration],
    ) -> String {
        let mut outages: Vec<Duration> = self.outages.iter().map(|(_, d)| *d).collect();
        outages.sort();
        let pct = |outages: &[Duration], p: f64| -> String {
            if outages.is_empty() {
                return "–".to_owned();
            }
            let rank = ((p * outages.len() as f64).ceil() as usize).clamp(1, outages.len());
            format!("{:.2} s", outages[rank - 1].as_secs_f64())
        };
        let mut routes: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
        for (route, d) in &self.outages {
            routes.entry(route).or_default().push(*d);
        }
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| clients | server kills | sent | acknowledged | delivered | lost | duplicated | reconnect p50 | reconnect p99 |"
        );
        let _ = writeln!(t, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let kills = counts.get("SIGKILL").copied().unwrap_or(0)
            + counts.get("SIGTERM").copied().unwrap_or(0);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            args.clients,
            kills,
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicated,
            pct(&outages, 0.5),
            pct(&outages, 0.99)
        );
        let _ = writeln!(t);
        let faults: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = writeln!(t, "- faults: {}", faults.join(", "));
        let _ = writeln!(
            t,
            "- outages lived through by clients: {} (max {:.2} s); server restarts ready in {}",
            outages.len(),
            outages.last().map_or(0.0, |d| d.as_secs_f64()),
            restarts
                .iter()
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let by_route: Vec<String> = routes
            .iter_mut()
            .map(|(route, d)| {
                d.sort();
                format!(
                    "{route} {} outages, p50 {} / p99 {}",
                    d.len(),
                    pct(d, 0.5),
                    pct(d, 0.99)
                )
            })
            .collect();
        let _ = writeln!(t, "- reconnect time by route: {}", by_route.join("; "));
        let _ = writeln!(
            t,
            "- resends deduplicated by the server (ack `duplicate: true`): {}; unfinished publishes: {}; `recovered: false`: {}; clients that reached FAILED: {}",
            self.resent, self.unfinished, self.resets, self.failed
        );
        t
    }
}

/// Markers around the generated part of a `--report` file.
const REPORT_START: &str = "<!-- chaos:start (written by `cargo xtask chaos --report FILE`) -->";
/// End marker.
const REPORT_END: &str = "<!-- chaos:end -->";

fn report_markdown(command: &str, table: &str, verdict: &Verdict) -> String {
    let outcome = if verdict.lost == 0 && verdict.duplicated == 0 && verdict.unfinished == 0 {
        "no message lost, none duplicated"
    } else {
        "FAILED: see the counts"
    };
    format!("Command:\n\n```\n{command}\n```\n\nResult ({outcome}):\n\n{table}")
}
