//! Doctor tests: a broken configuration yields the right `FAIL` lines; `check-env` output is
//! mapped line by line; logs and the tunnel are judged as documented.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use super::*;
use crate::util::project_root;

/// The `tether` binary the workspace build made (`cargo nextest run` builds it for the server's
/// integration tests), or a fresh build when it is missing. Never rebuilt over an existing one:
/// other tests may be running it at this moment.
async fn tether_for_tests() -> std::path::PathBuf {
    let built = crate::web::target_dir().join("debug").join("tether");
    if built.is_file() {
        return built;
    }
    build_quietly().await.expect("building tether")
}

fn lines(report: &Report) -> Vec<String> {
    report
        .checks()
        .iter()
        .map(|c| format!("{} {}", c.status, c.check))
        .collect()
}

fn status_of(report: &Report, check: &str) -> Status {
    report
        .checks()
        .iter()
        .find(|c| c.check == check)
        .unwrap_or_else(|| panic!("no {check} line in {:?}", lines(report)))
        .status
}

#[test]
fn a_broken_production_configuration_fails_the_security_checks() {
    let settings = Settings::from_pairs([
        ("TETHER_ENV", "production"),
        ("TETHER_JWT_SECRET", "too-short"),
        ("TETHER_ALLOWED_ORIGINS", "https://app.example.com,*"),
    ]);
    let mut report = Report::new(false);
    security(&settings, &mut report);
    assert_eq!(
        lines(&report),
        [
            "FAIL security.secret",
            "FAIL security.origins",
            "FAIL security.transport"
        ]
    );
    let secret = &report.checks()[0].detail;
    assert!(
        secret.contains("9 bytes") && secret.contains("at least 32"),
        "{secret}"
    );
    assert!(
        !secret.contains("too-short"),
        "the secret itself is never shown"
    );
    assert!(report.failed());
}

#[test]
fn a_missing_production_secret_and_half_a_tls_pair_fail() {
    let settings = Settings::from_pairs([
        ("TETHER_ENV", "production"),
        ("TETHER_TLS_CERT", "/etc/tether/cert.pem"),
    ]);
    let mut report = Report::new(false);
    security(&settings, &mut report);
    assert_eq!(status_of(&report, "security.secret"), Status::Fail);
    assert_eq!(status_of(&report, "security.transport"), Status::Fail);
    assert_eq!(status_of(&report, "security.origins"), Status::Warn);
}

#[test]
fn a_sound_production_configuration_passes() {
    let secret = "k".repeat(48);
    let settings = Settings::from_pairs([
        ("TETHER_ENV", "production"),
        ("TETHER_JWT_SECRET", secret.as_str()),
        ("TETHER_ALLOWED_ORIGINS", "https://app.example.com"),
        ("TETHER_TRUSTED_PROXIES", "10.0.0.0/8"),
    ]);
    let mut report = Report::new(false);
    security(&settings, &mut report);
    assert_eq!(
        lines(&report),
        [
            "PASS security.secret",
            "PASS security.origins",
            "PASS security.transport"
        ]
    );
}

#[test]
fn development_gets_notes_not_failures() {
    let settings = Settings::from_pairs([("TETHER_ALLOWED_ORIGINS", "*")]);
    let mut report = Report::new(false);
    security(&settings, &mut report);
    assert!(!report.failed(), "{:?}", lines(&report));
    assert_eq!(status_of(&report, "security.origins"), Status::Warn);
    assert_eq!(status_of(&report, "security.environment"), Status::Warn);
}

#[test]
fn env_files_parse_like_systemd_reads_them() {
    let vars = parse_env_file(
        "# comment\n\nTETHER_ENV=production\nexport PORT=9000\nTETHER_ALLOWED_ORIGINS=\"https://a.example\"\nBAD LINE\nX='y z'\n",
    );
    assert_eq!(
        vars.get("TETHER_ENV").map(String::as_str),
        Some("production")
    );
    assert_eq!(vars.get("PORT").map(String::as_str), Some("9000"));
    assert_eq!(
        vars.get("TETHER_ALLOWED_ORIGINS").map(String::as_str),
        Some("https://a.example")
    );
    assert_eq!(vars.get("X").map(String::as_str), Some("y z"));
    assert_eq!(vars.len(), 4);
}

#[tokio::test]
async fn check_env_lines_become_env_checks_and_a_failure_fails() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("tether");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = check-env ] || exit 9\necho \"FAIL variables: DATABASE_URL: unsupported scheme mysql\"\necho \"PASS twilio: not configured\"\necho \"WARN secret: development secret\"\necho \"FAIL store: no usable DATABASE_URL\"\nexit 1\n",
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let settings = Settings::from_pairs([("DATABASE_URL", "mysql://db/tether")]);
    let mut report = Report::new(false);
    check_env(&fake, &settings, &mut report).await;
    assert_eq!(
        lines(&report),
        [
            "FAIL env.variables",
            "PASS env.twilio",
            "WARN env.secret",
            "FAIL env.store"
        ]
    );
    assert_eq!(
        report.checks()[0].detail,
        "DATABASE_URL: unsupported scheme mysql"
    );
}

#[test]
fn logs_are_judged_by_format_and_error_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tether.log");
    let line = |level: &str, event: &str| {
        format!(
            r#"{{"timestamp":"2026-11-27T14:00:00.123Z","level":"{level}","component":"server","event":"{event}","data":{{}}}}"#
        )
    };
    let mut text = String::new();
    for _ in 0..90 {
        text += &line("info", "connection_opened");
        text.push('\n');
    }
    for _ in 0..4 {
        text += &line("warn", "auth_failure");
        text.push('\n');
    }
    for _ in 0..6 {
        text += &line("error", "store_write_failed");
        text.push('\n');
    }
    std::fs::write(&path, &text).expect("write");
    let mut report = Report::new(false);
    logs(&path, &mut report);
    assert_eq!(lines(&report), ["PASS logs.format", "FAIL logs.errors"]);
    let detail = &report.checks()[1].detail;
    assert!(
        detail.contains("6 error") && detail.contains("store_write_failed×6"),
        "{detail}"
    );

    std::fs::write(&path, format!("{text}plain text line\n")).expect("write");
    let mut report = Report::new(false);
    logs(&path, &mut report);
    assert_eq!(status_of(&report, "logs.format"), Status::Fail);
}

/// Serves one `/api/tunnels` answer per connection, `count` times, on a thread.
fn fake_ngrok_api(url: &'static str, count: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf); // The request itself does not matter.
            let body = format!(
                r#"{{"tunnels":[{{"public_url":"{url}","proto":"https","config":{{"addr":"http://localhost:8081"}}}}]}}"#
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test]
async fn the_tunnel_url_must_equal_public_url() {
    let api = fake_ngrok_api("https://abc.ngrok.app", 2);
    let mut report = Report::new(false);
    let same = Settings::from_pairs([("PUBLIC_URL", "https://abc.ngrok.app/")]);
    tunnel_check(&same, api, &mut report).await;
    let other = Settings::from_pairs([("PUBLIC_URL", "https://old.ngrok.app")]);
    tunnel_check(&other, api, &mut report).await;
    assert_eq!(lines(&report), ["PASS tunnel", "FAIL tunnel"]);
    assert!(report.checks()[1].detail.contains("https://old.ngrok.app"));

    // An ngrok PUBLIC_URL with no ngrok running fails; no tunnel and no PUBLIC_URL passes.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut report = Report::new(false);
    tunnel_check(&other, closed, &mut report).await;
    tunnel_check(&Settings::from_pairs([]), closed, &mut report).await;
    assert_eq!(lines(&report), ["FAIL tunnel", "PASS tunnel"]);
}

// ---------------------------------------------------------------------------------------------
// deploy/

#[test]
fn the_shipped_deploy_files_agree_with_the_seed_and_the_server() {
    let mut report = Report::new(false);
    deploy::check_deploy(&project_root(), deploy::CONTRACT_DRAIN_MS, &mut report);
    let failed: Vec<&Check> = report
        .checks()
        .iter()
        .filter(|c| c.status == Status::Fail)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for check in ["deploy.k8s", "deploy.systemd", "deploy.otel"] {
        assert_eq!(status_of(&report, check), Status::Pass, "{check}");
    }
    // Present on the project's machines; where missing the check is a WARN, never skipped.
    for check in ["deploy.systemd.verify", "deploy.pm2"] {
        assert_ne!(status_of(&report, check), Status::Fail, "{check}");
    }
}

/// A copy of `deploy/` with one file edited.
fn deploy_copy_with(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = project_root().join("deploy");
    for sub in ["k8s", "systemd", "pm2", "otel"] {
        let dst = tmp.path().join("deploy").join(sub);
        std::fs::create_dir_all(&dst).expect("mkdir");
        for entry in std::fs::read_dir(src.join(sub)).expect("read deploy") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, dst.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let path = tmp.path().join("deploy").join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&path, text.replace(from, to)).expect("write");
    tmp
}

#[test]
fn a_grace_period_shorter_than_prestop_plus_drain_fails() {
    let tmp = deploy_copy_with(
        "k8s/deployment.yaml",
        "terminationGracePeriodSeconds: 15",
        "terminationGracePeriodSeconds: 8",
    );
    let err = deploy::k8s(&tmp.path().join("deploy/k8s"), 5000).expect_err("too short");
    assert!(
        err.to_string()
            .contains("does not cover preStop 5 s + drain 5000 ms"),
        "{err}"
    );
    // The same files pass against their own drain window, and fail against a longer one.
    let ok = deploy_copy_with(
        "k8s/deployment.yaml",
        "path: /health/ready",
        "path: /health/ready",
    );
    assert!(deploy::k8s(&ok.path().join("deploy/k8s"), 5000).is_ok());
    assert!(deploy::k8s(&ok.path().join("deploy/k8s"), 12_000).is_err());
}

#[test]
fn wrong_probe_paths_and_limits_fail() {
    let tmp = deploy_copy_with("k8s/deployment.yaml", "path: /health/live", "path: /health");
    let err = deploy::k8s(&tmp.path().join("deploy/k8s"), 5000).expect_err("wrong path");
    assert!(err.to_string().contains("livenessProbe"), "{err}");
    let tmp = deploy_copy_with("k8s/deployment.yaml", "memory: 500Mi", "memory: 1Gi");
    assert!(deploy::k8s(&tmp.path().join("deploy/k8s"), 5000).is_err());
    let tmp = deploy_copy_with(
        "k8s/deployment.yaml",
        "type: Recreate",
        "type: RollingUpdate",
    );
    let err = deploy::k8s(&tmp.path().join("deploy/k8s"), 5000).expect_err("rolling");
    assert!(err.to_string().contains("Recreate"), "{err}");
}

#[test]
fn systemd_limits_that_cannot_trip_or_cut_the_drain_fail() {
    let tmp = deploy_copy_with(
        "systemd/tether.service",
        "StartLimitIntervalSec=300",
        "StartLimitIntervalSec=20",
    );
    let err = deploy::systemd(&tmp.path().join("deploy/systemd"), 5000).expect_err("short window");
    assert!(err.to_string().contains("too short"), "{err}");
    let tmp = deploy_copy_with(
        "systemd/tether.service",
        "TimeoutStopSec=15",
        "TimeoutStopSec=4",
    );
    let err = deploy::systemd(&tmp.path().join("deploy/systemd"), 5000).expect_err("short stop");
    assert!(err.to_string().contains("TimeoutStopSec=4"), "{err}");
}

#[test]
fn systemd_analyze_rejects_a_broken_unit() {
    let tmp = deploy_copy_with(
        "systemd/tether.service",
        "RestartSec=3",
        "RestartSec=banana",
    );
    match deploy::systemd_analyze(&tmp.path().join("deploy/systemd")) {
        Ok(None) => {} // No systemd-analyze on this machine: reported as WARN by check_deploy.
        Ok(Some(detail)) => panic!("accepted a broken unit: {detail}"),
        Err(err) => assert!(err.to_string().contains("banana"), "{err}"),
    }
}

#[test]
fn the_pm2_file_must_outlast_the_drain() {
    match deploy::pm2(&project_root().join("deploy/pm2/ecosystem.config.js"), 5000) {
        Ok(Some(detail)) => assert!(detail.contains("kill_timeout 10000 ms"), "{detail}"),
        Ok(None) => {} // No node: a WARN in the report.
        Err(err) => panic!("{err:#}"),
    }
    let tmp = deploy_copy_with(
        "pm2/ecosystem.config.js",
        "max_restarts: 10",
        "max_restarts: 3",
    );
    if let Ok(result) = deploy::pm2(&tmp.path().join("deploy/pm2/ecosystem.config.js"), 5000) {
        assert!(result.is_none(), "accepted max_restarts 3");
    }
}

#[test]
fn the_drain_default_is_read_from_the_servers_help() {
    let help = "      --heartbeat-ms <HEARTBEAT_MS>\n          Heartbeat interval told to clients, ms [default: 30000]\n          [env: TETHER_HEARTBEAT_MS=]\n      --drain-ms <DRAIN_MS>\n          Drain window on shutdown, ms [default:\n          5000] [env: TETHER_DRAIN_MS=]\n      --log-format <LOG_FORMAT>\n          [default: json]\n";
    // Wrapped across lines, clap may split the bracket; the compact form is what it prints
    // in the common case.
    let compact = help.replace("[default:\n          5000]", "[default: 5000]");
    assert_eq!(
        deploy::parse_help_default(&compact, "--drain-ms"),
        Some(5000)
    );
    assert_eq!(
        deploy::parse_help_default(&compact, "--heartbeat-ms"),
        Some(30000)
    );
    assert_eq!(deploy::parse_help_default(&compact, "--log-format"), None);
    assert_eq!(deploy::parse_help_default(&compact, "--nope"), None);
}

#[tokio::test]
async fn the_pm2_file_runs_the_real_server_and_pm2_restarts_it_after_a_kill() {
    // The real binary (a no-op build when `cargo xtask test` has built the workspace), PM2 from
    // npm into target/pm2; without npm this fails with a message saying so.
    let tether = tether_for_tests().await;
    let ecosystem = project_root().join("deploy/pm2/ecosystem.config.js");
    let detail = pm2::pm2_live(&tether, &ecosystem)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert!(detail.contains("restarted it"), "{detail}");
}

#[tokio::test]
async fn the_real_check_env_reports_a_broken_configuration_and_the_manifests_match_its_drain() {
    let tether = tether_for_tests().await;

    // The server's own drain default (from `tether serve --help`) against the deploy files.
    let drain = deploy::server_drain_default(&tether).expect("serve --help states --drain-ms");
    assert_eq!(drain, deploy::CONTRACT_DRAIN_MS);
    let port = {
        let out = std::process::Command::new(&tether)
            .args(["serve", "--help"])
            .output()
            .expect("serve --help");
        deploy::parse_help_default(&String::from_utf8_lossy(&out.stdout), "--port")
    };
    assert_eq!(port, Some(8081));
    let mut report = Report::new(false);
    deploy::check_deploy(&project_root(), drain, &mut report);
    assert_eq!(status_of(&report, "deploy.k8s"), Status::Pass);
    assert_eq!(status_of(&report, "deploy.systemd"), Status::Pass);

    // A broken production file: the real `tether check-env` names each bad setting.
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("tether.env");
    std::fs::write(
        &env_file,
        "TETHER_ENV=production\nTETHER_JWT_SECRET=Zq7xK9w\nTETHER_ALLOWED_ORIGINS=*\n\
         DATABASE_URL=mysql://db/tether\nTWILIO_ACCOUNT_SID=AC123\nPORT=0\n",
    )
    .expect("write");
    let settings = Settings::load(Some(&env_file)).expect("settings");
    let mut report = Report::new(false);
    check_env(&tether, &settings, &mut report).await;
    security(&settings, &mut report);
    let fails: Vec<String> = report
        .checks()
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    let has = |check: &str, word: &str| {
        fails
            .iter()
            .any(|f| f.starts_with(&format!("{check}:")) && f.contains(word))
    };
    assert!(has("env.variables", "DATABASE_URL"), "{fails:#?}");
    assert!(has("env.variables", "TETHER_ALLOWED_ORIGINS"), "{fails:#?}");
    assert!(has("env.twilio", "TWILIO_AUTH_TOKEN"), "{fails:#?}");
    assert!(has("env.secret", "TETHER_JWT_SECRET"), "{fails:#?}");
    assert!(has("security.secret", "7 bytes"), "{fails:#?}");
    assert!(has("security.origins", "`*`"), "{fails:#?}");
    assert!(has("security.transport", "TLS"), "{fails:#?}");
    assert!(
        !fails.iter().any(|f| f.contains("Zq7xK9w")),
        "the secret's value never appears: {fails:#?}"
    );
}

#[tokio::test]
async fn the_live_check_passes_against_the_real_server() {
    let tether = tether_for_tests().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let secret = "doctor-test-secret-0123456789-abcdefghij";
    let env = [
        ("PORT", port.to_string()),
        ("TETHER_HOST", "127.0.0.1".to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite://{}/tether.db", dir.path().display()),
        ),
        ("TETHER_JWT_SECRET", secret.to_owned()),
    ];
    let mut server = tokio::process::Command::new(&tether)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tether serve");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    tokio::time::timeout(Duration::from_secs(30), async {
        while !matches!(
            crate::supervisor::http_get(addr, "/health/live").await,
            Ok((200, _))
        ) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server answers /health/live");

    let out = std::process::Command::new(&tether)
        .args([
            "token",
            "--sub",
            "doctor",
            "--subscribe",
            "doctor:*",
            "--publish",
            "doctor:*",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir.path())
        .output()
        .expect("tether token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let base = format!("http://{addr}");
    for _ in 0..3 {
        let detail = live::connect_drop_resume(&base, &token)
            .await
            .unwrap_or_else(|err| panic!("{err:#}"));
        assert!(detail.contains("1 missed message replayed"), "{detail}");
    }
    let bad = live::connect_drop_resume(&base, "not-a-token").await;
    assert!(bad.is_err(), "a bad token must not pass the check");
    server.kill().await.expect("stop the server");
}

#[test]
fn an_ngrok_public_url_without_ngrok_fails_the_dependency_check() {
    let empty = tempfile::tempdir().expect("tempdir");
    let path = Some(empty.path().as_os_str());
    let mut report = Report::new(false);
    dependencies(
        &Settings::from_pairs([("PUBLIC_URL", "https://x.ngrok.app")]),
        path,
        &mut report,
    );
    assert_eq!(status_of(&report, "deps.ngrok"), Status::Fail);
    assert_eq!(status_of(&report, "deps.jq"), Status::Warn);
    let mut report = Report::new(false);
    dependencies(&Settings::from_pairs([]), path, &mut report);
    assert_eq!(status_of(&report, "deps.ngrok"), Status::Warn);
    assert!(!report.failed());
}
