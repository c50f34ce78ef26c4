//! `cargo xtask bench --calls N`: the Twilio relay under load (issue 11). `tether` runs with
//! Twilio on and `builtin:echo` as the agent (pinned to CPU 0 when `taskset` exists);
//! `tether simulate-call --calls N` (CPU 1) plays N calls at once, each 20 ms μ-law frames at
//! 50/s, so N = 200 is 10,000 frames/s each way. Reported: the pooled round trip of every
//! frame (Twilio frame in → echoed frame out, measured by the player, so it also holds the
//! player's own time: an upper bound of what Tether adds), frames lost, and the server's CPU
//! over the run from `/proc/<pid>/stat`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::server::{self, Server};

const AUTH_TOKEN: &str = "bench-twilio-auth-token";
const PUBLIC_URL: &str = "https://tether-bench.example.test";

/// One run's figures.
pub struct Figures {
    /// simulate-call's `all` line.
    pub summary: String,
    /// Server CPU over the run, in % of one core.
    pub cpu_percent: f64,
}

pub fn run(release: bool, calls: usize, seconds: f64) -> Result<()> {
    let exe = server::build_tether(release)?;
    let f = measure(&exe, calls, seconds)?;
    println!(
        "twilio relay ({} build): {calls} calls × {seconds} s through builtin:echo",
        if release { "release" } else { "debug" }
    );
    println!("  {}", f.summary);
    println!("  server CPU {:.1} % of one core", f.cpu_percent);
    Ok(())
}

/// Starts the server, plays the calls, and reads the figures.
pub fn measure(exe: &Path, calls: usize, seconds: f64) -> Result<Figures> {
    let dir = tempfile::tempdir().context("a temporary folder for the store")?;
    let pinned = server::has_taskset();
    let srv = Server::tether_with(
        exe,
        dir.path(),
        calls + 100,
        pinned.then_some(0),
        0,
        &[
            ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("TWILIO_PHONE_NUMBER", "+15550199"),
            ("PUBLIC_URL", PUBLIC_URL),
        ],
    )?;
    let cpu_before = cpu_ticks(srv.pid())?;
    let started = Instant::now();
    let out = server::pinned(exe, pinned.then_some(1))
        .args(["simulate-call", "--url"])
        .arg(format!("http://{}", srv.addr))
        .args(["--seconds", &seconds.to_string()])
        .args(["--calls", &calls.to_string()])
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("PUBLIC_URL", PUBLIC_URL)
        .stderr(Stdio::inherit())
        .output()
        .context("running tether simulate-call")?;
    let wall = started.elapsed();
    let cpu = cpu_ticks(srv.pid())?.saturating_sub(cpu_before);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("simulate-call failed ({}):\n{stdout}", out.status);
    }
    let summary = if calls > 1 {
        stdout
            .lines()
            .find(|l| l.starts_with("all "))
            .context("simulate-call printed no `all` line")?
            .to_owned()
    } else {
        stdout.lines().next().unwrap_or_default().to_owned()
    };
    Ok(Figures {
        summary,
        cpu_percent: ticks_to_percent(cpu, wall),
    })
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("reading the server's /proc stat")?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("a /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("a short /proc stat line")?
            .parse()
            .context("a /proc stat number")
    };
    // After ")": field 3 is index 0, so utime (14) is 11 and stime (15) is 12.
    Ok(field(11)? + field(12)?)
}

/// Linux's USER_HZ is 100 on every architecture Tether targets.
fn ticks_to_percent(ticks: u64, wall: Duration) -> f64 {
    ticks as f64 / 100.0 / wall.as_secs_f64().max(1e-9) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_reads_this_process() {
        let t = cpu_ticks(std::process::id()).unwrap();
        // Burn a little CPU: the count cannot go down.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_ticks(std::process::id()).unwrap() >= t);
        assert!((ticks_to_percent(50, Duration::from_secs(1)) - 50.0).abs() < 1e-9);
    }
}
