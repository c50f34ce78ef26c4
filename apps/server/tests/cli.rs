//! The `tether` binary's command line, run as a process: configuration refusals (exit 2, one
//! line per bad setting), `tether token` (verified with our own verifier), `tether check-env`,
//! and the `server_started` line of `tether serve`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use server::auth::{AuthConfig, Authenticator};

const SECRET: &str = "cli-test-secret-cli-test-secret-cli-test";

/// The binary with an empty environment, run in `dir`, its store under `dir/data`.
fn tether(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.env_clear()
        .current_dir(dir)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/data/tether.db", dir.display()),
        )
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the tether binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bad_configuration_exits_2_with_one_line_per_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path())
        .arg("serve")
        .env("DATABASE_URL", "mysql://db/x")
        .env("PORT", "eighty")
        .env("TETHER_ENV", "staging")
        .env("TETHER_HEARTBEAT_MS", "-1")
        .env("TWILIO_ACCOUNT_SID", "AC1"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(
        lines.contains(&r#"DATABASE_URL: unsupported scheme "mysql" (use sqlite: or postgres:)"#),
        "{err}"
    );
    for name in ["PORT:", "TETHER_ENV:", "TETHER_HEARTBEAT_MS:"] {
        assert!(lines.iter().any(|l| l.starts_with(name)), "{name} in {err}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER, PUBLIC_URL: missing")),
        "{err}"
    );
    // Nothing was created for a refused configuration.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn malformed_postgres_url_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path())
        .arg("serve")
        .env("DATABASE_URL", "postgres://u:p@localhost:notaport/tether"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("DATABASE_URL: not a valid postgres URL"),
        "{err}"
    );
    assert!(!err.contains("u:p"), "credentials are not echoed: {err}");
}

#[test]
fn production_refusals_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path())
        .args(["serve", "--env", "production", "--allowed-origins", "*"])
        .env("TETHER_JWT_SECRET", "too-short"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("TETHER_JWT_SECRET: secret too short")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("TETHER_ALLOWED_ORIGINS:")),
        "{err}"
    );
    assert!(!err.contains("too-short"), "the secret never shows: {err}");

    let out = run(tether(dir.path()).args(["serve", "--env", "production"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("TETHER_JWT_SECRET: required in production"));
}

#[test]
fn secrets_are_not_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path()).args(["serve", "--jwt-secret", "x"]));
    assert_eq!(out.status.code(), Some(2), "clap refuses the unknown flag");
}

#[test]
fn token_verifies_with_the_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path())
        .args([
            "token",
            "--sub",
            "alice",
            "--subscribe",
            "room:*",
            "--publish",
            "room:1",
            "--ttl",
            "120",
        ])
        .env("TETHER_JWT_SECRET", SECRET));
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1);
    let token = stdout.trim();
    let claims = Authenticator::new(&AuthConfig::with_secret(SECRET))
        .verify(token)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert!(claims.can_subscribe("room:42") && claims.can_publish("room:1"));
    assert!(!claims.can_publish("room:2"));
    let iat = claims.iat.expect("iat present");
    assert_eq!(claims.exp - iat, 120);
    assert!(!claims.admin);
    // A different key refuses it.
    assert!(
        Authenticator::new(&AuthConfig::with_secret("another-secret-another-secret-12"))
            .verify(token)
            .is_err()
    );
}

#[test]
fn dev_token_uses_the_kept_dev_secret() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(tether(dir.path()).args(["token", "--sub", "dev", "--admin"]));
    assert!(first.status.success(), "{first:?}");
    let secret_file = dir.path().join("data").join("dev-secret");
    let secret = std::fs::read_to_string(&secret_file).expect("dev secret created");
    assert!(
        text(&first.stderr).contains("dev-secret"),
        "warned: {}",
        text(&first.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let auth = Authenticator::new(&AuthConfig::with_secret(secret.trim()));
    let claims = auth.verify(text(&first.stdout).trim()).unwrap();
    assert!(claims.admin);
    // A second run keeps the same secret.
    let second = run(tether(dir.path()).args(["token", "--sub", "dev"]));
    assert!(auth.verify(text(&second.stdout).trim()).is_ok());
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret);
}

#[test]
fn token_refuses_bad_globs() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path())
        .args(["token", "--sub", "a", "--subscribe", "bad glob"])
        .env("TETHER_JWT_SECRET", SECRET));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("--subscribe: invalid channel glob"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_env_passes_on_a_good_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tether(dir.path()).arg("check-env").env("PORT", "0"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for check in ["variables", "twilio", "port", "store"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("PASS {check}:"))),
            "{check}: {stdout}"
        );
    }
    // Development without a secret passes with a warning: still one line for the check.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("WARN secret:") && l.contains("would generate")),
        "{stdout}"
    );
    assert!(
        !dir.path().join("data").join("dev-secret").exists(),
        "check-env creates no secret"
    );
    assert!(
        dir.path().join("data").join("tether.db").exists(),
        "store opened and migrated"
    );
}

#[test]
fn check_env_fails_on_a_busy_port_and_partial_twilio() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = run(tether(dir.path())
        .arg("check-env")
        .env("PORT", port.to_string())
        .env("TETHER_JWT_SECRET", SECRET)
        .env("TWILIO_PHONE_NUMBER", "+15550000"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with(
            "FAIL twilio: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, PUBLIC_URL: missing"
        )),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL port:") && l.contains(&port.to_string())),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("PASS store:")),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET));
    drop(busy);
}

#[test]
fn serve_logs_server_started_as_json_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tether(dir.path())
        .arg("serve")
        .env("PORT", "0")
        .env("TETHER_DRAIN_MS", "0")
        .env("TETHER_JWT_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut started = None;
    while started.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a server_started line within 30 s");
        let entry: protocol::LogEntry =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a §7 line ({e}): {line}"));
        assert!(!line.contains(SECRET));
        if entry.event == "server_started" {
            started = Some(entry);
        }
    }
    let entry = started.unwrap();
    assert_eq!(entry.level, protocol::LogLevel::Info);
    assert_eq!(entry.component, "server");
    assert_eq!(entry.data["host"], "127.0.0.1");
    assert!(entry.data["port"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(entry.data["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(entry.data["store"], "sqlite");

    #[cfg(unix)]
    {
        let pid = child.id().to_string();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        match done_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(status) => assert_eq!(status.unwrap().code(), Some(0)),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("serve did not stop within 30 s of SIGTERM");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT`, spans are exported as OTLP http/protobuf; the start-up
/// span reaches a (fake) collector at the latest when the server stops.
#[cfg(unix)]
#[test]
fn serve_exports_otlp_traces_when_configured() {
    use std::io::{Read as _, Write as _};

    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let (req_tx, req_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // One request is enough; the thread ends with the test process otherwise.
        let Ok((mut conn, _)) = collector.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(i + 4);
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end.unwrap_or(buf.len())]).into_owned();
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let _ = req_tx.send(head);
    });

    let dir = tempfile::tempdir().unwrap();
    let mut child = tether(dir.path())
        .arg("serve")
        .env("PORT", "0")
        .env("TETHER_DRAIN_MS", "0")
        .env("TETHER_JWT_SECRET", SECRET)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = line_rx
            .recv_timeout(left)
            .expect("server_started within 30 s");
        if line.contains("\"server_started\"") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let head = match req_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(head) => head,
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("no OTLP request within 30 s");
        }
    };
    assert!(head.starts_with("POST /v1/traces "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{head}"
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    match done_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(status) => assert_eq!(status.unwrap().code(), Some(0)),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("serve did not stop within 30 s of SIGTERM");
        }
    }
}
