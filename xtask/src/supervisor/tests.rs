//! Tests of the supervisor and the tunnel monitor with stand-in programs: `sh -c` scripts that
//! crash, leak memory, spin or hang, and a stand-in `ngrok` (this test binary itself, run in a
//! special mode) that serves the `/api/tunnels` API on loopback and then stops answering.
//! Delays are shortened through the policy; every wait is for an event, bounded by a timeout.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{LogEntry, LogLevel};
use tokio::sync::broadcast;

use super::tunnel::{self, TunnelConfig};
use super::*;

/// Generous bound for one awaited event on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

/// A policy with the seed's shape but millisecond delays, so a test runs in about a second.
fn fast_policy() -> Policy {
    Policy {
        restart_delay: Duration::from_millis(20),
        backoff_factor: 2,
        max_delay: Duration::from_millis(200),
        max_restarts: 10,
        stable_after: Duration::from_secs(60),
        memory_limit: 500_000_000,
        cpu_warn_percent: 80.0,
        cpu_warn_after: Duration::from_secs(10),
        sample_every: Duration::from_millis(50),
        stop_timeout: Duration::from_secs(5),
    }
}

fn sh(component: &'static str, script: &str) -> Spec {
    Spec::new(component, "/bin/sh", ["-c", script])
}

/// Waits for the next event named `name`; returns it and every event seen on the way.
async fn until(rx: &mut broadcast::Receiver<LogEntry>, name: &str) -> (LogEntry, Vec<LogEntry>) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(entry) if entry.event == name => return entry,
                Ok(entry) => seen.push(entry),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event log closed"),
            }
        }
    })
    .await;
    match found {
        Ok(entry) => (entry, seen),
        Err(_) => panic!("no `{name}` event within {WAIT:?}; saw {seen:#?}"),
    }
}

#[test]
fn delays_grow_exponentially_up_to_the_cap() {
    let policy = Policy::default();
    let delays: Vec<u64> = (1..=7)
        .map(|n| policy.delay_for(n).as_millis() as u64)
        .collect();
    assert_eq!(delays, [3000, 6000, 12000, 24000, 48000, 60000, 60000]);
    assert_eq!(policy.max_restarts, 10);
    assert_eq!(policy.memory_limit, 500_000_000);
    assert_eq!(policy.cpu_warn_percent, 80.0);
}

#[tokio::test]
async fn a_crashing_program_is_restarted_with_growing_delays_then_given_up() {
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    let mut sup = supervise(sh("server", "exit 3"), fast_policy(), None, log);

    let (limit, seen) = until(&mut rx, "restart_limit_reached").await;
    assert_eq!(limit.level, LogLevel::Error);
    assert_eq!(limit.component, "server");
    assert_eq!(limit.data["restarts"], 10);

    let starts = seen.iter().filter(|e| e.event == "process_started").count();
    assert_eq!(starts, 11, "the first start plus 10 restarts");
    let exits: Vec<&LogEntry> = seen
        .iter()
        .filter(|e| e.event == "process_exited")
        .collect();
    assert_eq!(exits.len(), 11);
    assert!(
        exits
            .iter()
            .all(|e| e.data["code"] == 3 && e.level == LogLevel::Warn)
    );
    let delays: Vec<u64> = seen
        .iter()
        .filter(|e| e.event == "restart_scheduled")
        .map(|e| e.data["delay_ms"].as_u64().expect("delay_ms is a number"))
        .collect();
    assert_eq!(delays, [20, 40, 80, 160, 200, 200, 200, 200, 200, 200]);
    let attempts: Vec<u64> = seen
        .iter()
        .filter(|e| e.event == "restart_scheduled")
        .map(|e| e.data["attempt"].as_u64().expect("attempt is a number"))
        .collect();
    assert_eq!(attempts, (1..=10).collect::<Vec<u64>>());

    assert_eq!(sup.finished().await, Finish::GaveUp);
    assert_eq!(sup.status().finished, Some(Finish::GaveUp));
}

#[tokio::test]
async fn a_clean_exit_ends_supervision_without_a_restart() {
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    let mut sup = supervise(sh("server", "exit 0"), fast_policy(), None, log);
    let (exited, _) = until(&mut rx, "process_exited").await;
    assert_eq!(exited.level, LogLevel::Info);
    assert_eq!(sup.finished().await, Finish::Exited);
}

#[tokio::test]
async fn a_program_leaking_past_the_memory_limit_is_restarted() {
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    // Doubles a string twenty times (~70 MiB); then idles so only the limit can end it.
    let leak = "x=0123456789012345678901234567890123456789012345678901234567890123456789; \
                i=0; while [ $i -lt 20 ]; do x=\"$x$x\"; i=$((i+1)); done; exec sleep 60";
    let policy = Policy {
        memory_limit: 24 * 1024 * 1024,
        ..fast_policy()
    };
    let sup = supervise(sh("server", leak), policy, None, log);

    let (first, _) = until(&mut rx, "process_started").await;
    let first_pid = first.data["pid"].as_u64().expect("pid");
    let (over, _) = until(&mut rx, "memory_limit_exceeded").await;
    assert_eq!(over.level, LogLevel::Warn);
    assert_eq!(over.data["pid"].as_u64(), Some(first_pid));
    assert!(over.data["rss_bytes"].as_u64().expect("rss") > 24 * 1024 * 1024);
    assert_eq!(over.data["limit_bytes"].as_u64(), Some(24 * 1024 * 1024));
    let (restart, _) = until(&mut rx, "restart_scheduled").await;
    assert_eq!(restart.data["reason"], "memory_limit");
    let (second, _) = until(&mut rx, "process_started").await;
    assert_ne!(second.data["pid"].as_u64(), Some(first_pid));
    assert!(!procfs::is_alive(
        u32::try_from(first_pid).expect("pid fits u32")
    ));

    assert_eq!(sup.stop().await, Finish::Stopped);
}

#[tokio::test]
async fn a_hung_program_that_fails_its_probe_is_restarted() {
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    // Nothing listens on this port: the probe fails like a hung server's /health would.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let probe = Probe {
        check: http_probe(closed, "/health"),
        interval: Duration::from_millis(100),
        startup_poll: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        startup_grace: Duration::from_millis(300),
        failures_allowed: 3,
        ready_event: "healthy",
        down_event: "unresponsive",
        info_key: "info",
    };
    let sup = supervise(
        sh("server", "exec sleep 60"),
        fast_policy(),
        Some(probe),
        log,
    );
    let (down, _) = until(&mut rx, "unresponsive").await;
    assert_eq!(down.level, LogLevel::Warn);
    assert_eq!(down.data["was_ready"], false);
    let (restart, _) = until(&mut rx, "restart_scheduled").await;
    assert_eq!(restart.data["reason"], "unresponsive");
    until(&mut rx, "process_started").await;
    assert_eq!(sup.stop().await, Finish::Stopped);
}

#[tokio::test]
async fn a_program_ignoring_sigterm_is_killed_when_stopped() {
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    let policy = Policy {
        stop_timeout: Duration::from_millis(300),
        ..fast_policy()
    };
    let sup = supervise(
        sh("server", "trap '' TERM; while :; do sleep 1; done"),
        policy,
        None,
        log,
    );
    let (started, _) = until(&mut rx, "process_started").await;
    let pid = u32::try_from(started.data["pid"].as_u64().expect("pid")).expect("pid fits");
    // Give the shell a moment to install its trap (an event, not a timing assumption: we wait
    // until it has started its first `sleep` child, visible as a second process in the group).
    tokio::time::timeout(WAIT, async {
        while procfs::cmdline(pid).is_none_or(|c| c.len() < 3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    })
    .await
    .expect("the stand-in started");
    let stopping = tokio::spawn(sup.stop());
    let (killed, _) = until(&mut rx, "process_killed").await;
    assert_eq!(killed.data["pid"].as_u64(), Some(u64::from(pid)));
    assert_eq!(stopping.await.expect("stop task"), Finish::Stopped);
    assert!(!procfs::is_alive(pid));
}

#[tokio::test]
async fn sustained_cpu_use_earns_a_warning() {
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    // The machine is shared with parallel builds, so the spinner may get well under a full
    // CPU; the lowered threshold keeps the test about the mechanism, not the load.
    let policy = Policy {
        cpu_warn_percent: 5.0,
        cpu_warn_after: Duration::from_millis(300),
        sample_every: Duration::from_millis(200),
        ..fast_policy()
    };
    let sup = supervise(sh("server", "while :; do :; done"), policy, None, log);
    let (warning, _) = until(&mut rx, "cpu_high").await;
    assert_eq!(warning.level, LogLevel::Warn);
    assert!(warning.data["cpu_percent"].as_f64().expect("percent") > 5.0);
    assert_eq!(sup.stop().await, Finish::Stopped);
}

#[tokio::test]
async fn output_is_kept_and_written_to_the_log_file_and_the_pid_file_is_managed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    let mut spec = sh("server", "echo one; echo two >&2; echo three; sleep 60");
    spec.output_file = Some(dir.path().join("server.log"));
    spec.pid_file = Some(dir.path().join("server.pid"));
    let sup = supervise(spec, fast_policy(), None, log);
    let (started, _) = until(&mut rx, "process_started").await;
    let pid = u32::try_from(started.data["pid"].as_u64().expect("pid")).expect("pid fits");

    tokio::time::timeout(WAIT, async {
        while sup.last_lines(10).len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("three output lines");
    let mut lines = sup.last_lines(10);
    lines.sort();
    assert_eq!(lines, ["one", "three", "two"]);
    assert_eq!(sup.last_lines(1).len(), 1);
    let record = pidfile::read(&dir.path().join("server.pid")).expect("pid file");
    assert_eq!(record.pid, pid);
    assert_eq!(record.component, "server");
    assert_eq!(record.cmdline, procfs::cmdline(pid).expect("cmdline"));

    assert_eq!(sup.stop().await, Finish::Stopped);
    let written = std::fs::read_to_string(dir.path().join("server.log")).expect("log file");
    assert_eq!(written.lines().count(), 3, "{written}");
    assert!(!dir.path().join("server.pid").exists());
}

/// Waits until `pid` shows `command` (a spawn can return before the child's exec completes).
async fn exec_done(pid: u32, command: &str) {
    tokio::time::timeout(WAIT, async {
        while procfs::cmdline(pid).map(|c| c.join(" ")).as_deref() != Some(command) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("pid {pid} never showed `{command}`"));
}

#[tokio::test]
async fn cleanup_stops_only_recorded_processes_whose_command_line_still_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A process left over by a "previous run", recorded truthfully.
    let mut leftover = tokio::process::Command::new("sleep")
        .arg("61")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let leftover_pid = leftover.id().expect("pid");
    exec_done(leftover_pid, "sleep 61").await;
    pidfile::write(&dir.path().join("server.pid"), "server", leftover_pid).expect("write");
    // Another process whose pid file records a different command line: a reused pid.
    let mut other = tokio::process::Command::new("sleep")
        .arg("62")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let other_pid = other.id().expect("pid");
    exec_done(other_pid, "sleep 62").await;
    let forged = pidfile::Record {
        component: "ngrok".to_owned(),
        pid: other_pid,
        cmdline: vec!["ngrok".to_owned(), "http".to_owned(), "8081".to_owned()],
        started: now(),
    };
    std::fs::write(
        dir.path().join("ngrok.pid"),
        serde_json::to_string(&forged).expect("json"),
    )
    .expect("write");
    std::fs::write(dir.path().join("junk.pid"), "not json").expect("write");

    let mut outcomes = pidfile::cleanup(dir.path(), Duration::from_secs(5)).await;
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert!(
        outcomes.contains(&pidfile::Cleaned::Stopped {
            component: "server".to_owned(),
            pid: leftover_pid,
            killed: false
        }),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|o| matches!(o,
        pidfile::Cleaned::PidReused { pid, now_running, .. } if *pid == other_pid && now_running == "sleep 62")));
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, pidfile::Cleaned::Unreadable { .. }))
    );
    // Terminated by SIGTERM, and the unrelated process untouched.
    let status = leftover.wait().await.expect("wait");
    assert!(!status.success());
    assert!(procfs::is_alive(other_pid));
    other.kill().await.expect("kill the unrelated sleep");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

    // A second run finds nothing left.
    assert!(
        pidfile::cleanup(dir.path(), Duration::from_secs(1))
            .await
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// The tunnel monitor with a stand-in ngrok

/// The environment variable that turns [`fake_ngrok_process`] into the stand-in.
const FAKE_STATE: &str = "TETHER_FAKE_NGROK_STATE";

/// Not a test of its own: the body of the stand-in `ngrok`. The tests put a script called
/// `ngrok` on a `PATH` of their own that runs this test binary with only this test selected,
/// and `FAKE_STATE` set; run normally, without it, it returns at once.
///
/// The stand-in serves ngrok's `GET /api/tunnels` on `TETHER_NGROK_API_ADDR`, with the public
/// URL `https://fake-<n>.ngrok.test` for its n-th start. The first start answers
/// `TETHER_FAKE_NGROK_ANSWERS` requests and then stops answering (it keeps the socket open and
/// the process alive, like a wedged agent), recording when in `<state>/silent_at_ms`.
#[test]
fn fake_ngrok_process() {
    let Some(state) = std::env::var_os(FAKE_STATE).map(PathBuf::from) else {
        return;
    };
    let api: SocketAddr = std::env::var("TETHER_NGROK_API_ADDR")
        .expect("the monitor passes TETHER_NGROK_API_ADDR")
        .parse()
        .expect("a socket address");
    let starts_file = state.join("starts");
    let starts: u32 = std::fs::read_to_string(&starts_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(&starts_file, starts.to_string()).expect("write starts");
    let answers: Option<u32> = if starts == 1 {
        std::env::var("TETHER_FAKE_NGROK_ANSWERS")
            .ok()
            .and_then(|n| n.parse().ok())
    } else {
        None
    };
    // The previous instance was killed; its port is free (SO_REUSEADDR), but allow a moment.
    let listener = (0..100)
        .find_map(|_| {
            TcpListener::bind(api).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(50));
                None
            })
        })
        .expect("bind the fake API address");
    let url = format!("https://fake-{starts}.ngrok.test");
    let mut answered = 0;
    loop {
        if answers.is_some_and(|n| answered >= n) {
            let ms = now().unix_millis();
            std::fs::write(state.join("silent_at_ms"), ms.to_string()).expect("write");
            loop {
                // Alive, listening, never answering again.
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        serve_tunnels(&mut stream, &url);
        answered += 1;
    }
}

/// Answers one HTTP request with ngrok's `/api/tunnels` shape.
fn serve_tunnels(stream: &mut std::net::TcpStream, url: &str) {
    use std::io::{Read, Write};
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!(
        r#"{{"tunnels":[{{"name":"command_line","public_url":"{url}","proto":"https","config":{{"addr":"http://localhost:8081","inspect":true}}}}],"uri":"/api/tunnels"}}"#
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()); // The client may have given up.
}

/// A directory holding an executable `ngrok` script that runs the stand-in.
fn fake_ngrok_on_path(dir: &Path) -> OsString {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let exe = std::env::current_exe().expect("the test binary's path");
    let script = format!(
        "#!/bin/sh\n# Stand-in ngrok: ignores its arguments, runs the test binary's fake.\nexec '{}' supervisor::tests::fake_ngrok_process --exact --nocapture --test-threads=1\n",
        exe.display()
    );
    let path = bin.join("ngrok");
    std::fs::write(&path, script).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::env::join_paths([bin, PathBuf::from("/usr/bin"), PathBuf::from("/bin")]).expect("a PATH")
}

fn free_loopback_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn the_tunnel_is_verified_and_restarted_within_one_check_interval_when_it_stops_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fake_ngrok_on_path(dir.path());
    let program = find_program("ngrok", Some(&path)).expect("the stand-in is on PATH");
    assert!(find_program("ngrok", Some(std::ffi::OsStr::new("/nonexistent"))).is_none());

    let log = EventLog::silent();
    let mut rx = log.subscribe();
    let interval = Duration::from_millis(400);
    let timeout = Duration::from_millis(300);
    let mut config = TunnelConfig::new(program, 8081);
    config.api_addr = free_loopback_addr();
    config.check_interval = interval;
    config.check_timeout = timeout;
    config.start_timeout = Duration::from_secs(15);
    config.log_file = Some(dir.path().join("ngrok.log"));
    config.env = vec![
        (FAKE_STATE.into(), dir.path().as_os_str().to_owned()),
        ("TETHER_FAKE_NGROK_ANSWERS".into(), "3".into()),
    ];
    config.policy = fast_policy();
    let tunnel = tunnel::start(config, log);

    // Verified through the API: the first URL becomes PUBLIC_URL.
    let first = tunnel.wait_public_url(WAIT).await.expect("tunnel up");
    assert_eq!(first, "https://fake-1.ngrok.test");
    let (up, _) = until(&mut rx, "tunnel_up").await;
    assert_eq!(up.component, "ngrok");
    assert_eq!(up.data["public_url"], "https://fake-1.ngrok.test");

    // It stops answering after three answers; the next check (at most one interval later)
    // times out and the tunnel is restarted.
    let (down, _) = until(&mut rx, "tunnel_down").await;
    assert_eq!(down.level, LogLevel::Warn);
    assert_eq!(down.data["was_ready"], true);
    let silent_at: i64 = std::fs::read_to_string(dir.path().join("silent_at_ms"))
        .expect("the stand-in recorded when it went silent")
        .trim()
        .parse()
        .expect("millis");
    let detected_after = down.timestamp.unix_millis() - silent_at;
    assert!(
        detected_after <= (interval + timeout).as_millis() as i64 + 300,
        "detected {detected_after} ms after the tunnel went silent"
    );
    let (restart, _) = until(&mut rx, "restart_scheduled").await;
    assert_eq!(restart.data["reason"], "unresponsive");

    // The restarted tunnel has a new URL, and PUBLIC_URL follows it.
    let (again, _) = until(&mut rx, "tunnel_up").await;
    assert_eq!(again.data["public_url"], "https://fake-2.ngrok.test");
    let mut watch = tunnel.watch();
    let status = tokio::time::timeout(
        WAIT,
        watch.wait_for(|s| s.info.as_deref() == Some("https://fake-2.ngrok.test")),
    )
    .await
    .expect("in time")
    .expect("supervisor alive")
    .clone();
    assert!(status.ready);
    assert_eq!(
        tunnel.public_url().as_deref(),
        Some("https://fake-2.ngrok.test")
    );

    assert_eq!(tunnel.stop().await, Finish::Stopped);
    let ngrok_log = std::fs::read_to_string(dir.path().join("ngrok.log")).unwrap_or_default();
    assert!(
        ngrok_log.contains("running 1 test"),
        "ngrok's output went to its log file"
    );
}

#[tokio::test]
async fn a_tunnel_whose_process_dies_is_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fake_ngrok_on_path(dir.path());
    let program = find_program("ngrok", Some(&path)).expect("on PATH");
    let log = EventLog::silent();
    let mut rx = log.subscribe();
    let mut config = TunnelConfig::new(program, 8081);
    config.api_addr = free_loopback_addr();
    config.check_interval = Duration::from_secs(30);
    config.env = vec![(FAKE_STATE.into(), dir.path().as_os_str().to_owned())];
    config.policy = fast_policy();
    let tunnel = tunnel::start(config, log);
    tunnel.wait_public_url(WAIT).await.expect("up");
    let pid = tunnel.pid().expect("running");
    signal_pid(pid, "KILL").await;
    let (exited, _) = until(&mut rx, "process_exited").await;
    assert_eq!(exited.component, "ngrok");
    let (again, _) = until(&mut rx, "tunnel_up").await;
    assert_eq!(again.data["public_url"], "https://fake-2.ngrok.test");
    assert_eq!(tunnel.stop().await, Finish::Stopped);
}

#[test]
fn the_install_hint_says_how_to_get_ngrok_or_run_without_it() {
    assert!(tunnel::INSTALL_HINT.contains("ngrok.com/download"));
    assert!(tunnel::INSTALL_HINT.contains("without `--tunnel`"));
}

#[test]
fn events_are_contract_json_lines_in_the_file_and_to_subscribers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("xtask.log");
    let log = EventLog::new(None, Some(&path)).expect("event log");
    let mut rx = log.subscribe();
    log.emit(
        LogLevel::Warn,
        "server",
        "restart_scheduled",
        serde_json::json!({"attempt": 1, "delay_ms": 3000}),
    );
    log.emit(
        LogLevel::Info,
        "xtask",
        "dev_ready",
        serde_json::json!("up"),
    );
    let text = std::fs::read_to_string(&path).expect("log file");
    let entries: Vec<LogEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a CONTRACT §7 line"))
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].component, "server");
    assert_eq!(entries[0].event, "restart_scheduled");
    assert_eq!(entries[0].data["delay_ms"], 3000);
    assert_eq!(entries[1].data["message"], "up");
    assert!(entries.iter().all(|e| e.connection_id.is_none()));
    assert_eq!(
        rx.try_recv().expect("subscribed").event,
        "restart_scheduled"
    );
    // Only a setting of what is printed; the file and subscribers get everything regardless.
    log.set_stdout_level(Some(LogLevel::Error));
}
