//! The development process supervisor behind `cargo xtask dev` (CONTRACT §9).
//!
//! It follows the seed's "Process Management" rules, which production delegates to systemd,
//! PM2 or Kubernetes (`deploy/`): a crashed process is restarted after 3000 ms, the delay
//! growing exponentially, at most 10 times in a row; a process whose resident memory passes
//! 500 MB is restarted; CPU above 80 % for a while earns a warning; a process that stops
//! answering its probe (a hung server, a dropped tunnel) is restarted. Every event is a
//! CONTRACT §7 JSON line (component `server`, `ngrok` or `xtask`).
//!
//! Each child runs in its own process group, so stopping it also stops whatever it started,
//! and a Ctrl-C in the terminal reaches `xtask` only, which then stops the children in order.
//! Signals are sent with the `kill` program rather than `libc::kill` because the workspace
//! denies `unsafe`.
//!
//! - [`EventLog`]: where the JSON lines go (stdout, a file, and subscribers such as tests).
//! - [`supervise`]: start a [`Spec`] under a [`Policy`], optionally watched by a [`Probe`].
//! - `tunnel`: the ngrok tunnel monitor, a supervised process whose probe reads the public URL.
//! - `procfs`: memory, CPU, command lines and port holders from `/proc`.
//! - `pidfile`: the pid files of `target/dev/`, and stopping what a previous run left.

mod eventlog;
mod net;
mod output;
pub mod pidfile;
pub mod procfs;
pub mod tunnel;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use protocol::LogLevel;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::eventlog::{EventLog, now};
pub use self::net::{http_get, http_probe};
use self::output::{Output, pump};
use self::procfs::CpuSampler;

// ---------------------------------------------------------------------------------------------
// What to run, and how

/// The program to supervise.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The `component` of its log lines: `server`, `ngrok`, …
    pub component: &'static str,
    /// The executable (a path, or a name looked up on `PATH`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables (on top of the inherited environment).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; the current one when `None`.
    pub cwd: Option<PathBuf>,
    /// Where its stdout and stderr lines are appended; kept in memory only when `None`.
    pub output_file: Option<PathBuf>,
    /// Where its pid and command line are recorded while it runs (see `pidfile`).
    pub pid_file: Option<PathBuf>,
}

impl Spec {
    /// A spec for `program` with `args` and nothing else set.
    pub fn new(
        component: &'static str,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Spec {
            component,
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            output_file: None,
            pid_file: None,
        }
    }
}

/// The restart and resource rules (the seed's "Recovery Settings").
#[derive(Clone, Debug)]
pub struct Policy {
    /// Delay before the first restart (seed: 3000 ms).
    pub restart_delay: Duration,
    /// Each further restart waits this many times longer (exponential growth) …
    pub backoff_factor: u32,
    /// … up to this delay.
    pub max_delay: Duration,
    /// At most this many restarts in a row (seed: 10); then supervision gives up.
    pub max_restarts: u32,
    /// A run at least this long was healthy: the restart count and delay start over. This is
    /// what makes "10 restarts" mean a crash loop rather than ten crashes over a week (PM2's
    /// `min_uptime`).
    pub stable_after: Duration,
    /// Restart when resident memory passes this many bytes (seed: 500 MB).
    pub memory_limit: u64,
    /// Warn when CPU use stays above this share of one CPU, in percent (seed: 80 %) …
    pub cpu_warn_percent: f64,
    /// … for at least this long.
    pub cpu_warn_after: Duration,
    /// How often memory and CPU are sampled.
    pub sample_every: Duration,
    /// After SIGTERM, how long the process may take to exit before SIGKILL. Longer than the
    /// server's drain window (5 s).
    pub stop_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restart_delay: Duration::from_millis(3000),
            backoff_factor: 2,
            max_delay: Duration::from_secs(60),
            max_restarts: 10,
            stable_after: Duration::from_secs(60),
            memory_limit: 500_000_000,
            cpu_warn_percent: 80.0,
            cpu_warn_after: Duration::from_secs(10),
            sample_every: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// The delay before restart number `attempt` (1-based): `restart_delay × factor^(attempt-1)`,
    /// capped at `max_delay`.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let mut delay = self.restart_delay;
        for _ in 1..attempt {
            delay = delay.saturating_mul(self.backoff_factor);
            if delay >= self.max_delay {
                return self.max_delay;
            }
        }
        delay.min(self.max_delay)
    }
}

/// The future a probe check returns: `Ok(info)` when the process answers (the info, e.g. the
/// tunnel's public URL, is published in [`Status::info`]), `Err` when it does not.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<Option<String>>> + Send>>;

/// A liveness check of a running process: the server's `/health`, the tunnel's local API.
#[derive(Clone)]
pub struct Probe {
    /// One check.
    pub check: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
    /// Time between checks once the process has answered (the tunnel: 60 s).
    pub interval: Duration,
    /// Time between checks while waiting for the first answer.
    pub startup_poll: Duration,
    /// A check that takes longer has failed.
    pub timeout: Duration,
    /// How long a fresh process may take to answer at all before it counts as hung.
    pub startup_grace: Duration,
    /// Restart after this many failed checks in a row (1: at the first failure).
    pub failures_allowed: u32,
    /// Event logged at the first answer, and when the info changes (`tunnel_up`, `healthy`).
    pub ready_event: &'static str,
    /// Event logged when the process stopped answering (`tunnel_down`, `unresponsive`).
    pub down_event: &'static str,
    /// The `data` key of the info in those events (`public_url`).
    pub info_key: &'static str,
}

/// How supervision ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// [`Supervised::stop`] was called.
    Stopped,
    /// The process exited with status 0 by itself (not a failure: not restarted).
    Exited,
    /// It failed more than `max_restarts` times in a row.
    GaveUp,
}

/// What the supervisor knows right now, published through a `watch` channel.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The running process, if any.
    pub pid: Option<u32>,
    /// Restarts so far in the current streak.
    pub restarts: u32,
    /// Whether the probe has answered since the last start (always `false` without a probe).
    pub ready: bool,
    /// The probe's latest info (the tunnel's public URL).
    pub info: Option<String>,
    /// Set once supervision is over.
    pub finished: Option<Finish>,
}

/// A process under supervision. Dropping it without [`Supervised::stop`] still stops the
/// process (the supervisor task notices and terminates it).
pub struct Supervised {
    component: &'static str,
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    task: Option<JoinHandle<Finish>>,
    output: Arc<Output>,
}

impl Supervised {
    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver to wait for status changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The last `n` lines the process wrote (stdout and stderr interleaved).
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.output.last_lines(n)
    }

    /// From now on, also print the process's output lines to the terminal (or stop doing so).
    pub fn set_echo(&self, echo: bool) {
        self.output.echo.store(echo, Ordering::Relaxed);
    }

    /// Waits until the status satisfies `f`, at most `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Status) -> bool,
    ) -> Result<Status> {
        let mut rx = self.status.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| f(s))).await {
            Ok(Ok(status)) => Ok(status.clone()),
            Ok(Err(_)) => bail!("the {} supervisor ended", self.component),
            Err(_) => bail!(
                "timed out after {:?} waiting for {}",
                timeout,
                self.component
            ),
        }
    }

    /// Stops the process (SIGTERM to its group, SIGKILL after `stop_timeout`) and ends
    /// supervision; returns how it ended.
    pub async fn stop(mut self) -> Finish {
        // The task may already be over (gave up); then nobody listens, which is fine.
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Finish::Stopped),
            None => Finish::Stopped,
        }
    }

    /// Waits until supervision ends by itself (gave up, or a clean exit).
    #[cfg(test)]
    pub async fn finished(&mut self) -> Finish {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Finish::Stopped),
            None => self.status().finished.unwrap_or(Finish::Stopped),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // The task terminates the child when it sees this.
        let _ = self.stop.send(true);
    }
}

/// Starts `spec` under `policy` and returns at once; the process is started, watched and
/// restarted by a background task until [`Supervised::stop`].
pub fn supervise(spec: Spec, policy: Policy, probe: Option<Probe>, log: EventLog) -> Supervised {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (status_tx, status_rx) = watch::channel(Status::default());
    let output = Arc::new(Output::new(spec.output_file.as_deref()));
    let component = spec.component;
    let task = tokio::spawn(run(
        spec,
        policy,
        probe,
        log,
        stop_rx,
        status_tx,
        output.clone(),
    ));
    Supervised {
        component,
        stop: stop_tx,
        status: status_rx,
        task: Some(task),
        output,
    }
}

// ---------------------------------------------------------------------------------------------
// The supervision loop

/// Why one run of the process ended.
enum RunEnd {
    Exited(ExitStatus),
    SpawnFailed(String),
    Memory,
    Unresponsive,
    Stop,
}

async fn run(
    spec: Spec,
    policy: Policy,
    probe: Option<Probe>,
    log: EventLog,
    mut stop: watch::Receiver<bool>,
    status: watch::Sender<Status>,
    output: Arc<Output>,
) -> Finish {
    let component = spec.component;
    let mut restarts: u32 = 0;
    let finish = loop {
        let started = Instant::now();
        let end = match start(&spec, &output) {
            Ok((mut child, pid)) => {
                status.send_modify(|s| {
                    s.pid = Some(pid);
                    s.ready = false;
                });
                log.emit(
                    LogLevel::Info,
                    component,
                    "process_started",
                    json!({
                        "pid": pid,
                        "program": spec.program.display().to_string(),
                        "args": spec.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
                        "restarts": restarts,
                    }),
                );
                if let Some(pid_file) = &spec.pid_file
                    && let Err(err) = pidfile::write(pid_file, component, pid)
                {
                    log.emit(
                        LogLevel::Warn,
                        "xtask",
                        "pid_file_failed",
                        json!({"path": pid_file.display().to_string(), "error": format!("{err:#}")}),
                    );
                }
                let end = watch_child(
                    &mut child,
                    pid,
                    &policy,
                    probe.as_ref(),
                    &log,
                    component,
                    &mut stop,
                    &status,
                )
                .await;
                if !matches!(end, RunEnd::Exited(_)) {
                    let how = terminate(&mut child, pid, policy.stop_timeout).await;
                    if how == Terminated::Killed {
                        log.emit(
                            LogLevel::Warn,
                            component,
                            "process_killed",
                            json!({"pid": pid, "reason": "did not exit after SIGTERM", "timeout_ms": millis(policy.stop_timeout)}),
                        );
                    }
                }
                if let Some(pid_file) = &spec.pid_file {
                    pidfile::remove(pid_file, pid);
                }
                status.send_modify(|s| {
                    s.pid = None;
                    s.ready = false;
                });
                end
            }
            Err(err) => RunEnd::SpawnFailed(format!("{err:#}")),
        };
        let uptime = started.elapsed();

        let reason = match end {
            RunEnd::Stop => {
                log.emit(LogLevel::Info, component, "process_stopped", json!({}));
                break Finish::Stopped;
            }
            RunEnd::Exited(exit) if exit.success() => {
                log.emit(
                    LogLevel::Info,
                    component,
                    "process_exited",
                    json!({"status": exit.to_string(), "code": 0, "uptime_ms": millis(uptime)}),
                );
                break Finish::Exited;
            }
            RunEnd::Exited(exit) => {
                log.emit(
                    LogLevel::Warn,
                    component,
                    "process_exited",
                    json!({"status": exit.to_string(), "code": exit.code(), "uptime_ms": millis(uptime)}),
                );
                "crashed"
            }
            RunEnd::SpawnFailed(error) => {
                log.emit(
                    LogLevel::Error,
                    component,
                    "process_spawn_failed",
                    json!({"program": spec.program.display().to_string(), "error": error}),
                );
                "spawn_failed"
            }
            RunEnd::Memory => "memory_limit",
            RunEnd::Unresponsive => "unresponsive",
        };

        if uptime >= policy.stable_after {
            restarts = 0;
        }
        if restarts >= policy.max_restarts {
            log.emit(
                LogLevel::Error,
                component,
                "restart_limit_reached",
                json!({"restarts": restarts, "max_restarts": policy.max_restarts, "last_reason": reason}),
            );
            break Finish::GaveUp;
        }
        restarts += 1;
        let delay = policy.delay_for(restarts);
        status.send_modify(|s| s.restarts = restarts);
        log.emit(
            LogLevel::Warn,
            component,
            "restart_scheduled",
            json!({
                "attempt": restarts,
                "max_restarts": policy.max_restarts,
                "delay_ms": millis(delay),
                "reason": reason,
            }),
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => {
                log.emit(LogLevel::Info, component, "process_stopped", json!({}));
                break Finish::Stopped;
            }
        }
    };
    status.send_modify(|s| s.finished = Some(finish.clone()));
    finish
}

/// Spawns the child in its own process group with piped output.
fn start(spec: &Spec, output: &Arc<Output>) -> Result<(Child, u32)> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: Ctrl-C in the terminal goes to xtask only, and stopping the child
        // stops its own children too.
        .process_group(0)
        // A last resort if xtask unwinds without stopping it.
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let pid = child
        .id()
        .context("invariant: a just-spawned child has a pid")?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(pump(stdout, output.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(pump(stderr, output.clone()));
    }
    Ok((child, pid))
}

/// Watches one run: exit, stop request, memory, CPU and the probe.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename these.
async fn watch_child(
    child: &mut Child,
    pid: u32,
    policy: &Policy,
    probe: Option<&Probe>,
    log: &EventLog,
    component: &'static str,
    stop: &mut watch::Receiver<bool>,
    status: &watch::Sender<Status>,
) -> RunEnd {
    let started = Instant::now();
    let mut sample = tokio::time::interval(policy.sample_every);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = CpuSampler::default();
    let mut cpu_high_since: Option<Instant> = None;
    let mut cpu_warned = false;

    let mut ready = false;
    let mut failures = 0u32;
    let mut next_probe = probe.map(|p| tokio::time::Instant::now() + p.startup_poll);

    loop {
        let probe_at = next_probe;
        tokio::select! {
            exit = child.wait() => {
                return match exit {
                    Ok(exit) => RunEnd::Exited(exit),
                    // Waiting itself failed: treat as gone, with a synthetic failure status.
                    Err(err) => RunEnd::SpawnFailed(format!("waiting for the process: {err}")),
                };
            }
            () = stopped(stop) => return RunEnd::Stop,
            _ = sample.tick() => {
                if let Some(rss) = procfs::rss_bytes(pid)
                    && rss > policy.memory_limit
                {
                    log.emit(
                        LogLevel::Warn,
                        component,
                        "memory_limit_exceeded",
                        json!({"pid": pid, "rss_bytes": rss, "limit_bytes": policy.memory_limit}),
                    );
                    return RunEnd::Memory;
                }
                if let Some(percent) = cpu.sample(pid) {
                    if percent > policy.cpu_warn_percent {
                        let since = *cpu_high_since.get_or_insert_with(Instant::now);
                        if !cpu_warned && since.elapsed() >= policy.cpu_warn_after {
                            cpu_warned = true;
                            log.emit(
                                LogLevel::Warn,
                                component,
                                "cpu_high",
                                json!({
                                    "pid": pid,
                                    "cpu_percent": (percent * 10.0).round() / 10.0,
                                    "threshold_percent": policy.cpu_warn_percent,
                                    "for_ms": millis(since.elapsed()),
                                }),
                            );
                        }
                    } else {
                        cpu_high_since = None;
                        if cpu_warned {
                            cpu_warned = false;
                            log.emit(
                                LogLevel::Info,
                                component,
                                "cpu_normal",
                                json!({"pid": pid, "cpu_percent": (percent * 10.0).round() / 10.0}),
                            );
                        }
                    }
                }
            }
            () = sleep_until_opt(probe_at) => {
                let Some(probe) = probe else { continue };
                let result = match tokio::time::timeout(probe.timeout, (probe.check)()).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("no answer within {:?}", probe.timeout)),
                };
                match result {
                    Ok(info) => {
                        failures = 0;
                        let changed = status.borrow().info != info;
                        if !ready || changed {
                            let mut data = serde_json::Map::new();
                            data.insert("pid".to_owned(), json!(pid));
                            if let Some(info) = &info {
                                data.insert(probe.info_key.to_owned(), json!(info));
                            }
                            if ready && changed {
                                data.insert("changed".to_owned(), json!(true));
                            }
                            log.emit(LogLevel::Info, component, probe.ready_event, Value::Object(data));
                        }
                        ready = true;
                        status.send_modify(|s| {
                            s.ready = true;
                            s.info = info;
                        });
                    }
                    Err(err) => {
                        failures += 1;
                        let hung = if ready {
                            failures >= probe.failures_allowed.max(1)
                        } else {
                            started.elapsed() >= probe.startup_grace
                        };
                        if hung {
                            log.emit(
                                LogLevel::Warn,
                                component,
                                probe.down_event,
                                json!({
                                    "pid": pid,
                                    "error": format!("{err:#}"),
                                    "failures": failures,
                                    "was_ready": ready,
                                }),
                            );
                            return RunEnd::Unresponsive;
                        }
                    }
                }
                let wait = if ready { probe.interval } else { probe.startup_poll };
                next_probe = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// Resolves once a stop is requested (or the [`Supervised`] handle is gone). Returns `()`
/// rather than the channel's `Ref`, which is not `Send` and must not live across an await.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender (the handle) was dropped, which is a stop request too.
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Terminated {
    Graceful,
    Killed,
}

/// SIGTERM to the child's process group; SIGKILL to it after `timeout`. The child is not
/// reaped before the signals are sent, so its pid (= the group id) cannot have been reused.
async fn terminate(child: &mut Child, pid: u32, timeout: Duration) -> Terminated {
    signal_group(pid, "TERM").await;
    if tokio::time::timeout(timeout, child.wait()).await.is_ok() {
        // Anything else left in the group (a shell's children) goes too.
        signal_group(pid, "KILL").await;
        return Terminated::Graceful;
    }
    signal_group(pid, "KILL").await;
    // After SIGKILL the wait ends promptly; an error means it is already reaped.
    let _ = child.wait().await;
    Terminated::Killed
}

/// Sends `signal` (`TERM`, `KILL`, …) to the process group `pgid`.
pub async fn signal_group(pgid: u32, signal: &str) {
    send_signal(&format!("-{pgid}"), signal).await;
}

/// Sends `signal` to the single process `pid`.
pub async fn signal_pid(pid: u32, signal: &str) {
    send_signal(&pid.to_string(), signal).await;
}

async fn send_signal(target: &str, signal: &str) {
    // `kill` fails when the target is already gone, which is the outcome we wanted.
    let _ = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Finds `name` in the `PATH`-style list `path` (an absolute or relative path is returned as
/// is when it exists).
pub fn find_program(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
