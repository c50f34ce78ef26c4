//! `cargo xtask bench` without `--peers`: Tether alone, the scenarios of `docs/benchmarks.md`
//! (set-up rate, fan-out to 1/100/1,000 subscribers saturated and paced, idle memory).
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::load::{CONNECT_CONCURRENCY, CpuMeter, Open};
use super::scenarios::{FanoutTarget, WINDOW, fanout, idle_memory, idle_tether, setup_rate};
use super::server::{self, Server};

/// Counts for one run.
pub struct Plan {
    pub release: bool,
    pub idle: usize,
    pub messages: usize,
    pub setups: usize,
    pub fanouts: Vec<usize>,
    pub only: Vec<String>,
}

pub fn run(plan: &Plan) -> Result<()> {
    let exe = server::build_tether(plan.release)?;
    let dir = tempfile::tempdir().context("a temporary folder for the store")?;
    let server = Server::tether(&exe, dir.path(), plan.idle + 100, None)?;
    let token: Arc<str> = Arc::from(server::token(&exe, dir.path())?);
    println!(
        "bench: tether ({}) pid {} on {}",
        if plan.release { "release" } else { "debug" },
        server.pid(),
        server.addr
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("the load generator's runtime")?;
    let wanted = |name: &str| plan.only.is_empty() || plan.only.iter().any(|o| o == name);
    let result = runtime.block_on(async {
        let addr = server.addr;
        let plain = Open::Tether {
            token: token.clone(),
            channel: None,
        };
        if wanted("setup") {
            let cpu = CpuMeter::start();
            let s = setup_rate(addr, &plain, plan.setups).await?;
            println!(
                "setup: {} connections (upgrade + hello → welcome, {CONNECT_CONCURRENCY} in flight): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms (load generator CPU {:.0} %)",
                plan.setups,
                s.rate,
                s.p50_ms,
                s.p99_ms,
                cpu.percent()
            );
        }
        let target = FanoutTarget::Tether(token.clone());
        for &subscribers in plan.fanouts.iter().filter(|_| wanted("fanout")) {
            let count = if subscribers >= 1_000 {
                plan.messages / 5
            } else {
                plan.messages
            };
            let cpu = CpuMeter::start();
            let f = fanout(addr, &target, subscribers, count, None).await?;
            println!(
                "fanout: {subscribers} subscriber(s) × {count} messages, saturated ({WINDOW} in flight): publish {:.0} msg/s, deliver {:.0} msg/s, latency p50 {:.2} ms, p99 {:.2} ms (load generator CPU {:.0} %)",
                f.publish_rate,
                f.deliver_rate,
                f.p50_ms,
                f.p99_ms,
                cpu.percent()
            );
            // Latency without queueing: a steady rate well below saturation.
            let rate = (100_000 / subscribers).clamp(20, 1_000);
            let paced = (rate * 2).min(count);
            let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1_000);
            let p = fanout(addr, &target, subscribers, paced, Some(interval)).await?;
            println!(
                "fanout: {subscribers} subscriber(s) × {paced} messages, paced at {rate} msg/s: latency p50 {:.2} ms, p99 {:.2} ms",
                p.p50_ms, p.p99_ms
            );
        }
        if wanted("memory") {
            let m = idle_memory(&server, &idle_tether(&token), plan.idle).await?;
            println!(
                "memory: {} idle subscribed connections: server RSS {:.1} MiB at {} → {:.1} MiB at {}, {:.2} KiB per added connection",
                plan.idle,
                m.before_kib as f64 / 1024.0,
                (plan.idle / 10).max(1),
                m.after_kib as f64 / 1024.0,
                plan.idle,
                m.per_connection_bytes / 1024.0
            );
        }
        anyhow::Ok(())
    });
    drop(server);
    result
}
