//! `cargo xtask bench --peers`: Tether beside a bare tokio-tungstenite server
//! (`xtask/peers/bare`) and Node `ws` (`xtask/peers/node/peer.js`), in one run, each server
//! pinned to CPU 0 and the load generator to CPU 1 (`taskset`), every scenario repeated
//! (3× by default) on a fresh process, and one table: median [min–max] per server, the ratio
//! Tether ÷ bare and the goal of issue 14.
//!
//! The same scenario means the same traffic: Tether authenticates (`hello` with a JWT) and
//! subscribes through its protocol and stores every publish durably; the peers only upgrade
//! (`/echo`, `/sub`, `/pub`). The load generator's CPU share is printed beside each figure:
//! near 100 % it, not the server, would be the limit.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::load::{CpuMeter, Open};
use super::scenarios::{FanoutTarget, fanout, idle_memory, idle_tether, paced_connect, paced_ping};
use super::server::{self, Server};

/// Counts for one `--peers` run.
pub struct Plan {
    pub release: bool,
    /// Pin servers to CPU 0 and this process to CPU 1.
    pub pin: bool,
    pub reps: usize,
    pub idle: usize,
    pub connects: usize,
    pub connect_rate: usize,
    pub ping_conns: usize,
    pub ping_rate: u32,
    pub ping_for: Duration,
    pub fan_subs: usize,
    pub fan_rate: u32,
    pub fan_messages: usize,
    pub publishes: usize,
}

impl Plan {
    /// The figures of issue 14.
    pub fn full(release: bool, reps: usize) -> Self {
        Self {
            release,
            pin: true,
            reps,
            idle: 10_000,
            connects: 2_000,
            connect_rate: 2_000,
            ping_conns: 1_000,
            ping_rate: 10,
            ping_for: Duration::from_secs(3),
            fan_subs: 1_000,
            fan_rate: 100,
            fan_messages: 300,
            publishes: 20_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Bare,
    Tether,
    Node,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare tokio-tungstenite",
            Self::Tether => "Tether",
            Self::Node => "Node ws",
        }
    }
}

/// A figure of the table, in row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Figure {
    IdleBytes,
    ConnectP50,
    ConnectP99,
    PingP99,
    FanoutP99,
    Publishes,
}

impl Figure {
    fn label(self, plan: &Plan) -> String {
        match self {
            Self::IdleBytes => format!("bytes per idle connection ({} subscribed)", plan.idle),
            Self::ConnectP50 => format!("connect p50 ms at {}/s", plan.connect_rate),
            Self::ConnectP99 => format!("connect p99 ms at {}/s", plan.connect_rate),
            Self::PingP99 => format!("ping p99 ms, {} × {}/s", plan.ping_conns, plan.ping_rate),
            Self::FanoutP99 => format!(
                "fan-out p99 ms, {} × {} msg/s",
                plan.fan_subs, plan.fan_rate
            ),
            Self::Publishes => "durable acked publishes/s, 1 → 1".to_owned(),
        }
    }

    /// The goal: Tether ÷ bare at most this, or (publishes) at least this many per second.
    fn goal(self) -> (f64, &'static str) {
        match self {
            Self::IdleBytes => (0.5, "≤ 0.5×"),
            Self::ConnectP50 => (f64::INFINITY, "—"),
            Self::ConnectP99 | Self::PingP99 => (1.5, "≤ 1.5×"),
            Self::FanoutP99 => (1.2, "≤ 1.2×"),
            Self::Publishes => (100_000.0, "≥ 100,000/s"),
        }
    }
}

type Samples = BTreeMap<(Figure, Kind), Vec<f64>>;

pub fn run(plan: &Plan) -> Result<()> {
    let (tether_exe, bare_exe) = server::build_tether_and_bare(plan.release)?;
    let node_modules = match server::install_node_ws() {
        Ok(m) => Some(m),
        Err(e) => {
            println!("bench: Node ws left out: {e:#}");
            None
        }
    };
    let pinned = plan.pin
        && server::has_taskset()
        && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pinned {
        // The load generator (this process and every thread it starts) on CPU 1.
        crate::util::run(
            std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", "1"])
                .arg(std::process::id().to_string())
                .stdout(std::process::Stdio::null()),
        )?;
    } else {
        println!("bench: not pinned (smoke run, or no taskset or fewer than two CPUs)");
    }
    let server_cpu = pinned.then_some(0);
    let runtime = if pinned {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .context("the load generator's runtime")?;

    let mut kinds = vec![Kind::Bare, Kind::Tether];
    if node_modules.is_some() {
        kinds.push(Kind::Node);
    }
    let mut samples = Samples::new();
    let mut load_cpu: BTreeMap<&'static str, f64> = BTreeMap::new();
    for rep in 1..=plan.reps {
        for &kind in &kinds {
            let dir = tempfile::tempdir().context("a temporary folder for the store")?;
            let srv = match kind {
                Kind::Tether => {
                    Server::tether(&tether_exe, dir.path(), plan.idle + 1_000, server_cpu)?
                }
                Kind::Bare => Server::bare(&bare_exe, server_cpu)?,
                Kind::Node => Server::node(
                    node_modules
                        .as_deref()
                        .expect("Node is in `kinds` only when installed"),
                    server_cpu,
                )?,
            };
            let token: Option<Arc<str>> = match kind {
                Kind::Tether => Some(Arc::from(server::token(&tether_exe, dir.path())?)),
                _ => None,
            };
            println!(
                "bench: run {rep}/{}: {} (pid {})",
                plan.reps,
                kind.name(),
                srv.pid()
            );
            runtime.block_on(one_server(
                plan,
                kind,
                &srv,
                token,
                &mut samples,
                &mut load_cpu,
            ))?;
        }
    }
    print_table(plan, &kinds, &samples, &load_cpu);
    Ok(())
}

async fn one_server(
    plan: &Plan,
    kind: Kind,
    srv: &Server,
    token: Option<Arc<str>>,
    samples: &mut Samples,
    load_cpu: &mut BTreeMap<&'static str, f64>,
) -> Result<()> {
    let addr = srv.addr;
    let mut record = |figure: Figure, value: f64| {
        samples.entry((figure, kind)).or_default().push(value);
    };
    let mut cpu_seen = |scenario: &'static str, cpu: &CpuMeter| {
        let p = cpu.percent();
        let e = load_cpu.entry(scenario).or_insert(0.0);
        *e = e.max(p);
    };
    let (plain, echo, idle, fan) = match &token {
        Some(token) => (
            Open::Tether {
                token: token.clone(),
                channel: None,
            },
            Open::Tether {
                token: token.clone(),
                channel: None,
            },
            idle_tether(token),
            FanoutTarget::Tether(token.clone()),
        ),
        None => (
            Open::Peer("/sub"),
            Open::Peer("/echo"),
            Open::Peer("/sub"),
            FanoutTarget::Peer,
        ),
    };

    let cpu = CpuMeter::start();
    let c = paced_connect(addr, &plain, plan.connects, plan.connect_rate).await?;
    cpu_seen("connect", &cpu);
    record(Figure::ConnectP50, c.p50_ms);
    record(Figure::ConnectP99, c.p99_ms);

    let cpu = CpuMeter::start();
    let p = paced_ping(addr, &echo, plan.ping_conns, plan.ping_rate, plan.ping_for).await?;
    cpu_seen("ping", &cpu);
    record(Figure::PingP99, p.p99_ms);

    let cpu = CpuMeter::start();
    let pace = Duration::from_secs(1) / plan.fan_rate.max(1);
    let f = fanout(addr, &fan, plan.fan_subs, plan.fan_messages, Some(pace)).await?;
    cpu_seen("fan-out", &cpu);
    record(Figure::FanoutP99, f.p99_ms);

    if kind == Kind::Tether {
        let cpu = CpuMeter::start();
        let s = fanout(addr, &fan, 1, plan.publishes, None).await?;
        cpu_seen("publishes", &cpu);
        record(Figure::Publishes, s.publish_rate);
    }

    let m = idle_memory(srv, &idle, plan.idle).await?;
    record(Figure::IdleBytes, m.per_connection_bytes);
    Ok(())
}

/// Median and range of a figure's samples.
fn summary(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some((s[s.len() / 2], s[0], s[s.len() - 1]))
}

fn cell(v: Option<&Vec<f64>>) -> String {
    match v.and_then(|v| summary(v)) {
        None => "—".to_owned(),
        Some((med, lo, hi)) => format!("{} [{}–{}]", num(med), num(lo), num(hi)),
    }
}

fn num(x: f64) -> String {
    if x >= 1_000.0 {
        let n = x.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn print_table(
    plan: &Plan,
    kinds: &[Kind],
    samples: &Samples,
    load_cpu: &BTreeMap<&'static str, f64>,
) {
    let figures = [
        Figure::IdleBytes,
        Figure::ConnectP50,
        Figure::ConnectP99,
        Figure::PingP99,
        Figure::FanoutP99,
        Figure::Publishes,
    ];
    println!();
    println!(
        "median [min–max] of {} run(s); servers on CPU 0, load generator on CPU 1",
        plan.reps
    );
    let mut head = "| figure |".to_owned();
    for k in kinds {
        head.push_str(&format!(" {} |", k.name()));
    }
    head.push_str(" Tether ÷ bare | goal | met |");
    println!("{head}");
    println!("|{}", "---|".repeat(kinds.len() + 4));
    for figure in figures {
        let mut row = format!("| {} |", figure.label(plan));
        for &k in kinds {
            row.push_str(&format!(" {} |", cell(samples.get(&(figure, k)))));
        }
        let med = |k| {
            samples
                .get(&(figure, k))
                .and_then(|v| summary(v))
                .map(|s| s.0)
        };
        let (goal, goal_text) = figure.goal();
        let (ratio, met) = match (figure, med(Kind::Tether), med(Kind::Bare)) {
            (Figure::Publishes, Some(t), _) => {
                ("—".to_owned(), if t >= goal { "yes" } else { "no" })
            }
            (_, Some(t), Some(b)) if b > 0.0 => {
                let r = t / b;
                (
                    format!("{r:.2}×"),
                    if goal.is_infinite() {
                        "—"
                    } else if r <= goal {
                        "yes"
                    } else {
                        "no"
                    },
                )
            }
            _ => ("—".to_owned(), "—"),
        };
        row.push_str(&format!(" {ratio} | {goal_text} | {met} |"));
        println!("{row}");
    }
    let cpu: Vec<String> = load_cpu
        .iter()
        .map(|(s, p)| format!("{s} {p:.0} %"))
        .collect();
    println!(
        "load generator CPU (highest of the runs, % of its one core): {}",
        cpu.join(", ")
    );
    if load_cpu.values().any(|&p| p >= 90.0) {
        println!(
            "warning: the load generator neared a full core: that scenario measures it, not the server"
        );
    }
}
