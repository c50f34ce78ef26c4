//! `cargo xtask dev [--tunnel ngrok]`: the whole stack on embedded defaults, in the startup
//! order of CONTRACT §9 (the seed's "Service Dependencies"), each step printed with its outcome
//! and duration:
//!
//! 1. stop what a previous `dev` left running (pid files under `target/dev/`, only those pids,
//!    only while their command line still matches);
//! 2. validate the environment (`tether check-env`; the binary is built for it);
//! 3. check ports 8081, 3000 (and 4040 with a tunnel), naming the holder of a busy one;
//! 4. start the tunnel and verify it through its local API (`--tunnel ngrok`);
//! 5. build and start the server under the supervisor (`supervisor.rs`);
//! 6. wait for `GET /health` to answer 200, showing the server's last lines if it does not;
//! 7. build the web app and serve it on `http://localhost:3000`, passing the server's paths
//!    through (`web.rs`, `webserve.rs`);
//! 8. print the URLs.
//!
//! Then it runs until Ctrl-C (or SIGTERM, e.g. from the next `dev`'s cleanup), and stops
//! everything it started: the web server, the server (which drains), the tunnel.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use protocol::LogLevel;
use serde_json::json;
use tokio::sync::watch;

use crate::supervisor::tunnel::{self, Tunnel, TunnelConfig};
use crate::supervisor::{
    EventLog, Finish, Policy, Probe, Spec, Supervised, find_program, http_get, http_probe, pidfile,
    procfs, supervise,
};
use crate::util::{project_root, secs};

mod steps;
pub use self::steps::Steps;

/// The server's port (CONTRACT §2).
pub const SERVER_PORT: u16 = 8081;
/// The web app's port (CONTRACT §9).
pub const WEB_PORT: u16 = 3000;
/// ngrok's local API port.
pub const NGROK_API_PORT: u16 = 4040;

/// `cargo xtask dev`: boot the stack.
#[derive(clap::Args)]
pub struct Args {
    /// Put a public tunnel in front of the server (needs the `ngrok` program).
    #[arg(long, value_enum)]
    tunnel: Option<TunnelKind>,
    /// How long to wait for the server's `GET /health` to answer 200, in seconds.
    #[arg(long, default_value_t = 120)]
    health_timeout: u64,
    /// Start only the server (and tunnel): no web app build, nothing on port 3000.
    #[arg(long)]
    no_web: bool,
    /// Do not echo the server's log lines to the terminal once the stack is up.
    #[arg(long)]
    quiet: bool,
    /// Where ngrok's local API listens (its `web_addr` setting), for the tunnel's checks.
    #[arg(long, value_name = "ADDR", default_value_t = tunnel::DEFAULT_API_ADDR)]
    ngrok_api: SocketAddr,
}

/// The tunnels `--tunnel` knows.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TunnelKind {
    /// `ngrok http 8081`, verified on its local API (127.0.0.1:4040).
    Ngrok,
}

/// Where `dev` keeps its pid files and logs: `target/dev/` of the workspace, whatever
/// `CARGO_TARGET_DIR` says, so that the next run (and `recover`) always finds them.
pub fn dev_dir() -> PathBuf {
    project_root().join("target").join("dev")
}

/// Runs `cargo xtask dev`.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(dev(args))
}

/// What `dev` started, so that a failure or Ctrl-C stops exactly that, in reverse order.
#[derive(Default)]
pub struct Started {
    /// The tunnel.
    pub tunnel: Option<Tunnel>,
    /// The supervised server.
    pub server: Option<Supervised>,
    /// The web server task and its shutdown switch.
    pub web: Option<(tokio::task::JoinHandle<Result<()>>, watch::Sender<bool>)>,
}

impl Started {
    /// Stops everything, printing each with its duration.
    pub async fn stop(self) {
        if let Some((task, switch)) = self.web {
            let t = Instant::now();
            // The task may have ended already; then there is nobody to tell.
            let _ = switch.send(true);
            let _ = task.await;
            println!("  stopped the web server in {}", secs(t.elapsed()));
        }
        if let Some(server) = self.server {
            let t = Instant::now();
            let finish = server.stop().await;
            println!(
                "  stopped the server in {} ({finish:?}; it drains its clients first)",
                secs(t.elapsed())
            );
        }
        if let Some(tunnel) = self.tunnel {
            let t = Instant::now();
            tunnel.stop().await;
            println!("  stopped the tunnel in {}", secs(t.elapsed()));
        }
    }
}

async fn dev(args: Args) -> Result<()> {
    let started_at = Instant::now();
    // Asking for a tunnel without ngrok is known before the first build; say so at once rather
    // than after minutes of compiling (step 4 checks again, in the contract's order).
    if args.tunnel.is_some() {
        ngrok_program(std::env::var_os("PATH").as_deref())?;
    }
    let dir = dev_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Warnings and errors (a crash, a restart) show at once; the rest once the stack is up.
    let log = EventLog::new(Some(LogLevel::Warn), Some(&dir.join("xtask.log")))?;
    let mut steps = Steps::new(
        "dev",
        &[
            "cleanup",
            "environment",
            "ports",
            "tunnel",
            "server",
            "health",
            "web",
            "urls",
        ],
    );
    let mut started = Started::default();

    let result = boot(&args, &dir, &log, &mut steps, &mut started).await;
    steps.summary();
    if let Err(err) = result {
        println!("\ndev: stopping what was started");
        started.stop().await;
        pidfile::remove(&dir.join("xtask.pid"), std::process::id());
        return Err(err);
    }

    // The stack is up: run until asked to stop, or until the server is given up on.
    log.emit(
        LogLevel::Info,
        "xtask",
        "dev_ready",
        json!({"startup_ms": started_at.elapsed().as_millis() as u64}),
    );
    if let Some(server) = &started.server {
        server.set_echo(!args.quiet);
    }
    if !args.quiet {
        log.set_stdout_level(Some(LogLevel::Info));
    }
    let outcome = run_until_stopped(&started, &dir, &log).await;
    println!("\ndev: {outcome}; stopping everything it started");
    let t = Instant::now();
    started.stop().await;
    pidfile::remove(&dir.join("xtask.pid"), std::process::id());
    println!("dev: stopped in {}", secs(t.elapsed()));
    log.emit(
        LogLevel::Info,
        "xtask",
        "dev_stopped",
        json!({"reason": outcome.to_string()}),
    );
    match outcome {
        Stop::Signal(_) => Ok(()),
        Stop::ServerGaveUp => bail!("the server kept crashing; see target/dev/server.log"),
    }
}

/// Steps 1–8.
async fn boot(
    args: &Args,
    dir: &Path,
    log: &EventLog,
    steps: &mut Steps,
    started: &mut Started,
) -> Result<()> {
    // 1. Cleanup.
    steps
        .run(
            "cleanup",
            "stop what a previous run left (target/dev/*.pid)",
            async {
                let cleaned = pidfile::cleanup(dir, Duration::from_secs(15)).await;
                if cleaned.is_empty() {
                    println!("    nothing left over");
                }
                for c in &cleaned {
                    println!("    {c}");
                }
                // This run, for the next one's cleanup.
                pidfile::write(&dir.join("xtask.pid"), "xtask", std::process::id())?;
                Ok(())
            },
        )
        .await?;

    // 2. Environment.
    let tether = steps
        .run(
            "environment",
            "build tether and run `tether check-env`",
            async {
                let exe = build_server().await?;
                check_env(&exe).await?;
                Ok(exe)
            },
        )
        .await?;

    // 3. Ports.
    let with_tunnel = args.tunnel.is_some();
    steps
        .run("ports", "check that the stack's ports are free", async {
            let mut ports = vec![(SERVER_PORT, "server")];
            if !args.no_web {
                ports.push((WEB_PORT, "web app"));
            }
            if with_tunnel {
                ports.push((args.ngrok_api.port(), "ngrok API"));
            }
            let mut busy = Vec::new();
            for (port, what) in ports {
                match check_port(port) {
                    Ok(()) => println!("    {port} ({what}): free"),
                    Err(why) => {
                        println!("    {port} ({what}): {why}");
                        busy.push(port);
                    }
                }
            }
            if busy.is_empty() {
                Ok(())
            } else {
                bail!(
                    "port(s) {busy:?} in use; stop the process(es) named above and run \
                     `cargo xtask dev` again"
                )
            }
        })
        .await?;

    // 4. Tunnel.
    let mut public_url = None;
    if let Some(TunnelKind::Ngrok) = args.tunnel {
        let url = steps
            .run(
                "tunnel",
                "start ngrok and verify it on 127.0.0.1:4040",
                async {
                    let path = std::env::var_os("PATH");
                    let Some(program) = find_program("ngrok", path.as_deref()) else {
                        bail!("{}", tunnel::INSTALL_HINT);
                    };
                    let mut config = TunnelConfig::new(program, SERVER_PORT);
                    config.domain = std::env::var("NGROK_DOMAIN").ok().filter(|d| !d.is_empty());
                    config.api_addr = args.ngrok_api;
                    config.log_file = Some(dir.join("ngrok.log"));
                    config.pid_file = Some(dir.join("ngrok.pid"));
                    let tunnel = tunnel::start(config, log.clone());
                    let url = tunnel.wait_public_url(Duration::from_secs(30)).await;
                    match url {
                        Ok(url) => {
                            println!("    PUBLIC_URL={url}");
                            std::fs::write(dir.join("public_url"), format!("{url}\n"))
                                .context("writing target/dev/public_url")?;
                            started.tunnel = Some(tunnel);
                            Ok(url)
                        }
                        Err(err) => {
                            for line in tunnel.last_lines(15) {
                                println!("    ngrok| {line}");
                            }
                            tunnel.stop().await;
                            Err(err.context(
                                "ngrok did not report a tunnel (see target/dev/ngrok.log)",
                            ))
                        }
                    }
                },
            )
            .await?;
        public_url = Some(url);
    } else {
        steps.skip("tunnel", "no --tunnel");
    }

    // 5. Server.
    let server = steps
        .run(
            "server",
            "build and start `tether serve` under the supervisor",
            async {
                let exe = build_server().await?;
                if exe != tether {
                    println!("    note: the binary moved to {}", exe.display());
                }
                let spec = server_spec(&exe, dir, public_url.as_deref());
                println!(
                    "    $ {} serve   (logs: target/dev/server.log)",
                    exe.display()
                );
                let server = supervise(spec, Policy::default(), Some(server_probe()), log.clone());
                let status = server
                    .wait_for(Duration::from_secs(10), |s| {
                        s.pid.is_some() || s.finished.is_some()
                    })
                    .await?;
                match status.pid {
                    Some(pid) => println!("    pid {pid}"),
                    None => bail!("the server did not start"),
                }
                Ok(server)
            },
        )
        .await?;
    started.server = Some(server);

    // 6. Health.
    steps
        .run("health", "wait for GET /health to answer 200", async {
            let server = started
                .server
                .as_ref()
                .context("invariant: started above")?;
            match wait_healthy(server, Duration::from_secs(args.health_timeout)).await {
                Ok(body) => {
                    println!("    {body}");
                    Ok(())
                }
                Err(err) => {
                    println!("    the server's last log lines:");
                    for line in server.last_lines(20) {
                        println!("    server| {line}");
                    }
                    Err(err)
                }
            }
        })
        .await?;

    // 7. Web app.
    if args.no_web {
        steps.skip("web", "--no-web");
    } else {
        let web = steps
            .run(
                "web",
                "build the web app and serve it on http://localhost:3000",
                async {
                    let built = tokio::task::spawn_blocking(crate::web::build)
                        .await
                        .context("the web build task panicked")??;
                    let (switch, mut switched) = watch::channel(false);
                    let shutdown = async move {
                        // A dropped sender is a shutdown too.
                        let _ = switched.wait_for(|stop| *stop).await;
                    };
                    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, WEB_PORT));
                    let upstream =
                        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SERVER_PORT));
                    let task = tokio::spawn(crate::webserve::serve_web(
                        built.dist.clone(),
                        listen,
                        upstream,
                        shutdown,
                    ));
                    // Serving means answering: ask for the page through it.
                    wait_http_ok(listen, "/", Duration::from_secs(10)).await?;
                    println!(
                        "    serving {} ({} KiB wasm)",
                        built.dist.display(),
                        built.wasm_bytes / 1024
                    );
                    Ok((task, switch))
                },
            )
            .await?;
        started.web = Some(web);
    }

    // 8. URLs.
    steps
        .run("urls", "the stack is up", async {
            print_urls(args, started);
            Ok(())
        })
        .await?;
    Ok(())
}

/// The `ngrok` program on `path`, or the install hint.
fn ngrok_program(path: Option<&std::ffi::OsStr>) -> Result<PathBuf> {
    match find_program("ngrok", path) {
        Some(program) => Ok(program),
        None => bail!("{}", tunnel::INSTALL_HINT),
    }
}

/// The server's command line and environment for development.
fn server_spec(exe: &Path, dir: &Path, public_url: Option<&str>) -> Spec {
    let mut spec = Spec::new("server", exe, ["serve"]);
    spec.cwd = Some(project_root());
    spec.output_file = Some(dir.join("server.log"));
    spec.pid_file = Some(dir.join("server.pid"));
    let mut env: Vec<(OsString, OsString)> = vec![("PORT".into(), SERVER_PORT.to_string().into())];
    if let Some(url) = public_url {
        // The tunnel's agent connects from loopback and sets X-Forwarded-For/-Proto: trust it,
        // so client addresses and `https` are read through it (unless configured otherwise).
        if std::env::var_os("TETHER_TRUSTED_PROXIES").is_none() {
            env.push((
                "TETHER_TRUSTED_PROXIES".into(),
                "127.0.0.1/32,::1/128".into(),
            ));
        }
        // PUBLIC_URL belongs to the Twilio set (all four or none, CONTRACT §2): pass it only
        // when the other three are configured, or the server would refuse to start.
        let twilio = ["TWILIO_ACCOUNT_SID", "TWILIO_PHONE_NUMBER"]
            .iter()
            .all(|k| std::env::var_os(k).is_some())
            && (std::env::var_os("TWILIO_AUTH_TOKEN").is_some()
                || std::env::var_os("TWILIO_AUTH_TOKEN_FILE").is_some());
        if twilio {
            env.push(("PUBLIC_URL".into(), url.into()));
        }
    }
    spec.env = env;
    spec
}

/// The supervisor's liveness probe of the server: `/health/live` (a hung event loop stops
/// answering it; a slow store does not, and must not cause restarts).
fn server_probe() -> Probe {
    Probe {
        check: http_probe(
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SERVER_PORT)),
            "/health/live",
        ),
        interval: Duration::from_secs(10),
        startup_poll: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
        // The first start may run migrations; dev's own health step waits separately.
        startup_grace: Duration::from_secs(60),
        failures_allowed: 3,
        ready_event: "server_live",
        down_event: "server_unresponsive",
        info_key: "info",
    }
}

/// `cargo build -p server`, with its output visible; the path of the `tether` binary.
pub async fn build_server() -> Result<PathBuf> {
    let mut cmd = tokio::process::Command::new("cargo");
    cmd.args(["build", "-p", "server", "--bin", "tether"])
        .current_dir(project_root())
        .stdin(Stdio::null());
    println!("    $ cargo build -p server --bin tether");
    let status = cmd
        .status()
        .await
        .context("running `cargo build -p server`")?;
    if !status.success() {
        bail!("`cargo build -p server` failed ({status})");
    }
    let exe = crate::web::target_dir().join("debug").join("tether");
    if !exe.is_file() {
        bail!("the build succeeded but {} is missing", exe.display());
    }
    Ok(exe)
}

/// `tether check-env`, its lines shown; fails when it does. The port is checked by the next
/// step instead (it can name the holder), so check-env gets `PORT=0`.
async fn check_env(exe: &Path) -> Result<()> {
    let out = tokio::process::Command::new(exe)
        .arg("check-env")
        .env("PORT", "0")
        .current_dir(project_root())
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} check-env", exe.display()))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("    {line}");
    }
    if !out.status.success() {
        bail!("`tether check-env` reported a failure ({})", out.status);
    }
    Ok(())
}

/// Whether `port` is free on loopback; if not, who holds it.
pub fn check_port(port: u16) -> std::result::Result<(), String> {
    let holders = procfs::port_holders(port);
    let bind = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    if holders.is_empty() {
        return match bind {
            Ok(_) => Ok(()),
            Err(err) => Err(format!("busy ({err}), held by a process we cannot see")),
        };
    }
    let names: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} (`{}`)", h.pid, h.command))
        .collect();
    Err(format!("busy, held by {}", names.join(", ")))
}

/// Polls `GET /health` until it answers 200; its body.
async fn wait_healthy(server: &Supervised, timeout: Duration) -> Result<String> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SERVER_PORT));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(finish) = server.status().finished {
            bail!("the server's supervisor ended ({finish:?}) before /health answered 200");
        }
        let last = match http_get(addr, "/health").await {
            Ok((200, body)) => return Ok(body),
            Ok((status, body)) => format!("{status}: {}", body.trim()),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("GET /health did not answer 200 within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `GET path` on `addr` until it answers 200.
async fn wait_http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http_get(addr, path).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, _)) => format!("answered {status}"),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("GET http://{addr}{path} did not answer 200 within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_urls(args: &Args, started: &Started) {
    println!();
    if !args.no_web {
        println!("    web app       http://localhost:{WEB_PORT}");
        println!("    dev token     http://localhost:{WEB_PORT}/dev/token?sub=me");
    }
    println!(
        "    server        http://127.0.0.1:{SERVER_PORT}   (WebSocket ws://127.0.0.1:{SERVER_PORT}/ws)"
    );
    println!("    health        http://127.0.0.1:{SERVER_PORT}/health");
    if let Some(url) = started.tunnel.as_ref().and_then(Tunnel::public_url) {
        println!("    public        {url}   (PUBLIC_URL, also in target/dev/public_url)");
        println!("    ngrok API     http://{}/api/tunnels", args.ngrok_api);
    }
    println!("    logs          target/dev/server.log, target/dev/xtask.log (supervisor events)");
    println!(
        "    probe         cargo run -p server -- probe --url ws://127.0.0.1:{SERVER_PORT}/ws"
    );
    println!();
    println!("    Ctrl-C stops everything.");
}

/// Why `dev` stops.
enum Stop {
    Signal(&'static str),
    ServerGaveUp,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(name) => write!(f, "{name} received"),
            Stop::ServerGaveUp => write!(f, "the server's supervisor gave up after 10 restarts"),
        }
    }
}

/// Runs until Ctrl-C/SIGTERM or until the server is given up on; keeps `PUBLIC_URL` current.
async fn run_until_stopped(started: &Started, dir: &Path, log: &EventLog) -> Stop {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match terminate.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let server_gave_up = async {
        match &started.server {
            Some(server) => {
                let mut w = server.watch();
                let _ = w.wait_for(|s| s.finished == Some(Finish::GaveUp)).await;
                // Any other end (the handle is alive, so none) would also land here.
            }
            None => std::future::pending().await,
        }
    };
    let url_changes = async {
        let Some(tunnel) = &started.tunnel else {
            return std::future::pending().await;
        };
        let mut w = tunnel.watch();
        let mut current = tunnel.public_url();
        while w.changed().await.is_ok() {
            let status = w.borrow_and_update().clone();
            if status.ready && status.info.is_some() && status.info != current {
                current = status.info.clone();
                let url = current.clone().unwrap_or_default();
                // Written before logging so a reader of the event finds the new value.
                let _ = std::fs::write(dir.join("public_url"), format!("{url}\n"));
                log.emit(
                    LogLevel::Warn,
                    "xtask",
                    "public_url_changed",
                    json!({"public_url": url, "note": "the tunnel restarted with a new URL; set NGROK_DOMAIN for a stable one"}),
                );
                println!("dev: the tunnel restarted; PUBLIC_URL is now {url}");
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Signal("Ctrl-C"),
        () = sigterm => Stop::Signal("SIGTERM"),
        () = server_gave_up => Stop::ServerGaveUp,
        () = url_changes => Stop::Signal("tunnel watcher ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_names_its_holder() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let why = check_port(port).expect_err("the port is held by this test");
        assert!(
            why.contains(&format!("pid {}", std::process::id())),
            "{why}"
        );
        drop(listener);
        assert_eq!(check_port(port), Ok(()));
    }

    #[test]
    fn a_tunnel_without_ngrok_says_how_to_install_it_or_run_without() {
        let empty = tempfile::tempdir().expect("tempdir");
        let err = ngrok_program(Some(empty.path().as_os_str())).expect_err("no ngrok there");
        let text = err.to_string();
        assert!(text.contains("ngrok was not found on PATH"), "{text}");
        assert!(text.contains("without `--tunnel`"), "{text}");
    }

    #[test]
    fn public_url_is_only_passed_with_the_rest_of_the_twilio_set() {
        let spec = server_spec(
            Path::new("/bin/tether"),
            Path::new("/tmp"),
            Some("https://x.ngrok.app"),
        );
        let keys: Vec<String> = spec
            .env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(keys.contains(&"PORT".to_owned()));
        // This test process has no TWILIO_* settings (CI does not set them).
        if std::env::var_os("TWILIO_ACCOUNT_SID").is_none() {
            assert!(!keys.contains(&"PUBLIC_URL".to_owned()), "{keys:?}");
        }
        if std::env::var_os("TETHER_TRUSTED_PROXIES").is_none() {
            assert!(keys.contains(&"TETHER_TRUSTED_PROXIES".to_owned()));
        }
        assert_eq!(spec.args, [OsString::from("serve")]);
    }
}
