//! A private, throwaway PostgreSQL cluster for tests and development: finds `initdb`/`pg_ctl`
//! (installing the Debian packages with `apt-get` when running as root and they are missing,
//! otherwise failing with the exact command), creates a cluster under a folder of `target/`,
//! runs `initdb` and `pg_ctl` as the `postgres` user (PostgreSQL refuses to run as root), on a
//! free loopback port with a log file, and stops the postmaster by its pid.
//!
//! Only `std`: the server's tests include this same file (`#[path]`) so a test run without
//! `TETHER_TEST_POSTGRES_URL` starts its cluster through exactly this logic.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable that hands a running cluster's URL to the tests.
pub const URL_ENV: &str = "TETHER_TEST_POSTGRES_URL";

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    /// The data folder.
    pub dir: PathBuf,
    /// The server log.
    pub log: PathBuf,
    /// The postmaster's pid.
    pub pid: u32,
    /// The port on 127.0.0.1.
    pub port: u16,
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`, installing them if allowed.
pub fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = search_bin() {
        return Ok(dir);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let install = "apt-get update && apt-get install -y postgresql";
    if !root {
        return Err(format!(
            "PostgreSQL is not installed; install it with: sudo sh -c '{install}'"
        ));
    }
    eprintln!("postgres: not found, installing: {install}");
    let ok = Command::new("sh")
        .args(["-c", install])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err(format!("installing PostgreSQL failed; run: {install}"));
    }
    search_bin().ok_or_else(|| format!("PostgreSQL still not found after: {install}"))
}

fn search_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    candidates.extend(["/usr/local/bin", "/usr/bin"].map(PathBuf::from));
    candidates
        .into_iter()
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `program args` as the `postgres` user when we are root, else as ourselves.
fn as_postgres(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed: {}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Cluster {
    /// Creates and starts a fresh cluster in `dir` (removed first if it exists).
    pub fn start(dir: &Path) -> Result<Self, String> {
        let bin = find_bin()?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        if is_root() {
            // The cluster's files belong to `postgres`; it only needs to traverse the parents.
            chown_postgres(dir)?;
        }
        let data_s = data.display().to_string();
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let port = free_port()?;
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300 -c fsync=off \
             -c synchronous_commit=on -c full_page_writes=off",
            dir.display()
        );
        let log_s = log.display().to_string();
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D", &data_s, "-l", &log_s, "-o", &opts, "-w", "-t", "60", "start",
            ],
        )?;
        let pid_text = std::fs::read_to_string(data.join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        let pid = pid_text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("postmaster.pid has no pid")?;
        Ok(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir: dir.to_path_buf(),
            log,
            pid,
            port,
        })
    }

    /// Stops the postmaster by its pid (fast shutdown) and waits up to 10 s for it to exit.
    pub fn stop(&self) {
        stop_pid(self.pid);
    }
}

/// SIGINT (PostgreSQL's fast shutdown) to `pid`, then wait for it to be gone.
pub fn stop_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

fn chown_postgres(dir: &Path) -> Result<(), String> {
    let ok = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("chown postgres {} failed", dir.display()))
    }
}

/// Starts a cluster for one test process and a watchdog that stops it (by pid) when that
/// process exits, so a test run never leaves a postmaster behind.
pub fn start_for_process(dir: &Path) -> Result<Cluster, String> {
    let cluster = Cluster::start(dir)?;
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -INT {pid}",
        pid = cluster.pid
    );
    Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .map_err(|e| format!("watchdog: {e}"))?;
    Ok(cluster)
}
