//! The processes under test: the real `tether` binary, the bare tokio-tungstenite peer
//! (`xtask/peers/bare`) and the Node `ws` peer (`xtask/peers/node/peer.js`), each a child
//! process (its own fd budget and its own RSS, read from `/proc/<pid>/status`), optionally
//! pinned to one CPU with `taskset`, killed when dropped.
use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// A secret for the benchmark's throw-away server (never a real one).
pub const SECRET: &str = "tether-bench-secret-0123456789abcdef0123456789";

/// Builds `tether` (release unless `release` is false) and returns the binary's path.
pub fn build_tether(release: bool) -> Result<PathBuf> {
    build("server", "tether", release)
}

/// Builds `tether` and the bare peer in one cargo invocation (one feature resolution, so the
/// shared dependencies are compiled once) and returns both binaries' paths.
pub fn build_tether_and_bare(release: bool) -> Result<(PathBuf, PathBuf)> {
    let mut args = vec![
        "build",
        "-p",
        "server",
        "--bin",
        "tether",
        "-p",
        "bare-peer",
        "--bin",
        "bare-peer",
    ];
    if release {
        args.push("--release");
    }
    crate::util::run(&mut crate::util::cargo(args))?;
    let dir = crate::web::target_dir().join(if release { "release" } else { "debug" });
    Ok((dir.join("tether"), dir.join("bare-peer")))
}

fn build(package: &str, bin: &str, release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", package, "--bin", bin];
    if release {
        args.push("--release");
    }
    crate::util::run(&mut crate::util::cargo(args))?;
    let profile = if release { "release" } else { "debug" };
    Ok(crate::web::target_dir().join(profile).join(bin))
}

/// Installs `ws` from npm into `target/bench-node` (once) and returns the `node_modules`
/// folder for `NODE_PATH`.
pub fn install_node_ws() -> Result<PathBuf> {
    let dir = crate::web::target_dir().join("bench-node");
    let modules = dir.join("node_modules");
    if !modules.join("ws").join("package.json").exists() {
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("ws@8")
            .status()
            .context("running npm (is Node installed?)")?;
        if !status.success() {
            bail!("npm install ws failed ({status})");
        }
    }
    Ok(modules)
}

/// The Node peer's script, kept with the benchmark.
pub fn node_script() -> PathBuf {
    crate::util::project_root()
        .join("xtask")
        .join("peers")
        .join("node")
        .join("peer.js")
}

/// One process under test.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Lines of its output that mention `Too many open files` (EMFILE), so far.
    emfile: Arc<AtomicUsize>,
}

/// How to start `command` pinned to `cpu` (when `taskset` exists and a CPU is given).
pub fn pinned(program: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) if has_taskset() => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

impl Server {
    /// Starts `tether serve` on a fresh SQLite file in `dir`, limits raised for `max_connections`.
    pub fn tether(
        exe: &Path,
        dir: &Path,
        max_connections: usize,
        cpu: Option<usize>,
    ) -> Result<Self> {
        Self::tether_on(exe, dir, max_connections, cpu, 0)
    }

    /// [`Server::tether`] on `port` (0: any free one), e.g. a restart on the same port.
    pub fn tether_on(
        exe: &Path,
        dir: &Path,
        max_connections: usize,
        cpu: Option<usize>,
        port: u16,
    ) -> Result<Self> {
        Self::tether_with(exe, dir, max_connections, cpu, port, &[])
    }

    /// [`Server::tether_on`] with `extra` environment (e.g. the Twilio settings).
    pub fn tether_with(
        exe: &Path,
        dir: &Path,
        max_connections: usize,
        cpu: Option<usize>,
        port: u16,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        let max = max_connections.to_string();
        let mut cmd = pinned(exe, cpu);
        cmd.arg("serve")
            .envs(tether_env(dir))
            .envs(extra.iter().copied())
            .env("PORT", port.to_string())
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
            .env("TETHER_HEARTBEAT_MS", "120000");
        Self::spawn(cmd, exe, |line| {
            let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
            (v["event"] == "server_started").then(|| v["data"]["port"].as_u64())?
        })
    }

    /// Starts the bare tokio-tungstenite peer.
    pub fn bare(exe: &Path, cpu: Option<usize>) -> Result<Self> {
        let mut cmd = pinned(exe, cpu);
        cmd.env("PORT", "0");
        Self::spawn(cmd, exe, listening_port)
    }

    /// Starts the Node `ws` peer.
    pub fn node(modules: &Path, cpu: Option<usize>) -> Result<Self> {
        let node = PathBuf::from("node");
        let mut cmd = pinned(&node, cpu);
        cmd.arg(node_script())
            .env("PORT", "0")
            .env("NODE_PATH", modules);
        Self::spawn(cmd, &node, listening_port)
    }

    fn spawn(
        mut cmd: Command,
        exe: &Path,
        port_of: impl Fn(&str) -> Option<u64> + Send + 'static,
    ) -> Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let emfile = Arc::new(AtomicUsize::new(0));
        let seen = emfile.clone();
        std::thread::spawn(move || {
            // Read to the end, so the child never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("Too many open files") {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(port) = port_of(&line) {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("{} did not say its port within 30 s", exe.display()))?;
        let port = u16::try_from(port).context("a port number")?;
        Ok(Self {
            child,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            emfile,
        })
    }

    /// Lines of its output so far that mention `Too many open files`.
    pub fn emfile_lines(&self) -> usize {
        self.emfile.load(Ordering::Relaxed)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
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

/// Whether `taskset` is on the `PATH` (util-linux).
pub fn has_taskset() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("taskset").is_file()))
}

fn listening_port(line: &str) -> Option<u64> {
    line.strip_prefix("listening ")?.trim().parse().ok()
}

/// The store and secret of a benchmark server in `dir`.
pub fn tether_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("bench.db").display()),
        ),
        ("TETHER_JWT_SECRET", SECRET.to_owned()),
    ]
}

/// A token with every right, from `tether token` (the same secret as the server).
pub fn token(exe: &Path, dir: &Path) -> Result<String> {
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
        .envs(tether_env(dir))
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
