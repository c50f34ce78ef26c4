//! Unit tests of config loading: defaults, every refusal named, the development secret.

use super::*;
use crate::store::Synchronous;

fn in_dir(dir: &Path) -> Settings {
    Settings {
        database_url: Some(format!("sqlite://{}/data/tether.db", dir.display())),
        ..Settings::default()
    }
}

fn strong() -> Env {
    Env::from_pairs([(SECRET_ENV, "x".repeat(40))])
}

fn errors(settings: &Settings, env: &Env) -> Vec<String> {
    Config::load(settings, env, SecretMode::ReadOnly)
        .expect_err("should be refused")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn defaults_are_the_contract_ones() {
    let c = Config::load(&Settings::default(), &strong(), SecretMode::ReadOnly).unwrap();
    assert_eq!(c.listen_addr().to_string(), "127.0.0.1:8081");
    assert_eq!(c.environment, Environment::Development);
    assert_eq!(c.database_url, "sqlite://data/tether.db");
    assert_eq!(c.store.path, PathBuf::from("data/tether.db"));
    assert_eq!(c.store.synchronous, Synchronous::Normal);
    assert_eq!(c.store.retention_messages, 10_000);
    assert_eq!(c.store.retention_max_age, Duration::from_secs(86_400));
    assert_eq!(c.store.dedup_window, Duration::from_secs(86_400));
    assert_eq!(c.heartbeat, Duration::from_millis(30_000));
    assert_eq!(c.drain, Duration::from_millis(5_000));
    assert_eq!(c.connection_timeout, Duration::from_millis(5_000));
    assert_eq!(c.latency_threshold, Duration::from_millis(200));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_message_bytes, 65_536);
    assert_eq!(
        c.limits.upgrade,
        RateLimit {
            burst: 20,
            per_sec: 10.0
        }
    );
    assert_eq!(
        c.limits.publish,
        RateLimit {
            burst: 1000,
            per_sec: 500.0
        }
    );
    assert_eq!(c.auth.leeway, Duration::from_secs(5));
    assert!(c.allowed_origins.allows("http://localhost:3000"));
    assert!(c.allowed_origins.allows("http://127.0.0.1:3000"));
    assert!(!c.allowed_origins.allows("http://localhost:3001"));
    assert!(c.trusted_proxies.is_empty());
    assert!(c.tls.is_none() && c.web_dir.is_none() && c.twilio.is_none());
    assert_eq!(c.secret_source, SecretSource::Env);
}

#[test]
fn every_bad_setting_is_reported_at_once() {
    let s = Settings {
        port: Some("80a".into()),
        host: Some("not a host".into()),
        database_url: Some("mysql://x/y".into()),
        environment: Some("staging".into()),
        heartbeat_ms: Some("soon".into()),
        log_format: Some("xml".into()),
        allowed_origins: Some("ftp://x, http://ok.example".into()),
        trusted_proxies: Some("10.0.0.0/33".into()),
        sqlite_synchronous: Some("off".into()),
        max_connections: Some("0".into()),
        ..Settings::default()
    };
    let lines = errors(&s, &strong());
    let expect = [
        "PORT: not a port number \"80a\"",
        "TETHER_HOST: not an IP address \"not a host\"",
        "DATABASE_URL: unsupported scheme \"mysql\" (use sqlite: or postgres:)",
        "TETHER_ENV: unknown environment \"staging\"",
        "TETHER_HEARTBEAT_MS: not a number: \"soon\"",
        "TETHER_LOG_FORMAT: unknown format \"xml\"",
        "TETHER_ALLOWED_ORIGINS: not an origin \"ftp://x\"",
        "TETHER_TRUSTED_PROXIES: bad prefix length",
        "TETHER_SQLITE_SYNCHRONOUS: unknown mode \"off\"",
        "TETHER_MAX_CONNECTIONS: \"0\" is below the minimum 1",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "missing {e:?} in {lines:#?}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
}

#[test]
fn database_urls() {
    assert_eq!(
        parse_database_url("sqlite://data/t.db").unwrap(),
        PathBuf::from("data/t.db")
    );
    assert_eq!(
        parse_database_url("sqlite:data/t.db").unwrap(),
        PathBuf::from("data/t.db")
    );
    assert_eq!(
        parse_database_url("sqlite:///abs/t.db?mode=rwc").unwrap(),
        PathBuf::from("/abs/t.db")
    );
    assert!(
        parse_database_url("postgres://u@h/db")
            .unwrap_err()
            .starts_with("postgres: is not supported")
    );
    assert!(
        parse_database_url("postgresql://u@h/db")
            .unwrap_err()
            .starts_with("postgres:")
    );
    assert!(parse_database_url("sqlite::memory:").is_err());
    assert!(parse_database_url("sqlite://").is_err());
    assert!(
        parse_database_url("data/tether.db")
            .unwrap_err()
            .starts_with("not a URL")
    );
    assert_eq!(
        parse_database_url("mysql://x").unwrap_err(),
        "unsupported scheme \"mysql\" (use sqlite: or postgres:)"
    );
}

#[test]
fn production_rules() {
    let prod = |extra: Settings| Settings {
        environment: Some("production".into()),
        ..extra
    };
    // Missing secret.
    let lines = errors(&prod(Settings::default()), &Env::default());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("TETHER_JWT_SECRET: required in production"));
    // Short secret, `*` origin.
    let s = prod(Settings {
        allowed_origins: Some("*".into()),
        ..Settings::default()
    });
    let lines = errors(&s, &Env::from_pairs([(SECRET_ENV, "short")]));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("TETHER_JWT_SECRET: secret too short (5 bytes"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("TETHER_ALLOWED_ORIGINS: \"*\" is not allowed in production"))
    );
    assert!(
        !lines.iter().any(|l| l.contains("short\"")),
        "the secret value never shows"
    );
    // Good production config warns about Twilio off and missing TLS.
    let c = Config::load(
        &prod(Settings {
            allowed_origins: Some("https://app.example.com".into()),
            ..Settings::default()
        }),
        &strong(),
        SecretMode::ReadOnly,
    )
    .unwrap();
    let warned = |name: &str| c.warnings.iter().any(|w| w.setting == name);
    assert!(warned("TWILIO_ACCOUNT_SID"));
    assert!(warned("TETHER_TLS_CERT"));
    assert!(c.allowed_origins.allows("https://APP.example.com:443"));
    assert!(!c.allowed_origins.allows("https://evil.example.com"));
}

#[test]
fn development_star_origin_is_a_warning() {
    let s = Settings {
        allowed_origins: Some("*".into()),
        ..Settings::default()
    };
    let c = Config::load(&s, &strong(), SecretMode::ReadOnly).unwrap();
    assert_eq!(c.allowed_origins, AllowedOrigins::Any);
    assert!(c.allowed_origins.allows("http://anything:1234"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.setting == "TETHER_ALLOWED_ORIGINS")
    );
}

#[test]
fn twilio_all_or_none() {
    let s = Settings {
        twilio_account_sid: Some("AC123".into()),
        public_url: Some("https://x.example".into()),
        ..Settings::default()
    };
    let lines = errors(&s, &strong());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER: missing"),
        "{lines:?}"
    );
    let full = Settings {
        twilio_phone_number: Some("+15550000".into()),
        ..s
    };
    let env = Env::from_pairs([
        (SECRET_ENV, "x".repeat(40)),
        (TWILIO_TOKEN_ENV, "tw-secret".into()),
    ]);
    let c = Config::load(&full, &env, SecretMode::ReadOnly).unwrap();
    let t = c.twilio.expect("configured");
    assert_eq!(t.auth_token.expose(), b"tw-secret");
    assert!(!format!("{t:?}").contains("tw-secret"));
}

#[test]
fn secret_from_file_and_both_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{}\n", "k".repeat(32))).unwrap();
    let s = Settings {
        jwt_secret_file: Some(file.display().to_string()),
        environment: Some("production".into()),
        allowed_origins: Some("https://a.example".into()),
        ..Settings::default()
    };
    let c = Config::load(&s, &Env::default(), SecretMode::ReadOnly).unwrap();
    assert_eq!(c.auth.secret.expose(), "k".repeat(32).as_bytes());
    assert_eq!(c.secret_source, SecretSource::File(file.clone()));
    assert!(
        !format!("{c:?}").contains(&"k".repeat(32)),
        "Debug redacts the secret"
    );
    let lines = errors(&s, &strong());
    assert!(lines[0].contains("not both"), "{lines:?}");
    let missing = Settings {
        jwt_secret_file: Some(dir.path().join("nope").display().to_string()),
        ..Settings::default()
    };
    assert!(
        errors(&missing, &Env::default())[0].starts_with("TETHER_JWT_SECRET_FILE: cannot read")
    );
}

#[test]
fn dev_secret_is_generated_once_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let s = in_dir(dir.path());
    let path = dir.path().join("data").join(DEV_SECRET_FILE);

    // check-env mode creates nothing.
    let c = Config::load(&s, &Env::default(), SecretMode::ReadOnly).unwrap();
    assert_eq!(c.secret_source, SecretSource::DevPending(path.clone()));
    assert!(!path.exists());

    let first = Config::load(&s, &Env::default(), SecretMode::Create).unwrap();
    assert_eq!(
        first.secret_source,
        SecretSource::DevFile {
            path: path.clone(),
            created: true
        }
    );
    assert!(first.auth.secret.len() >= MIN_SECRET_BYTES);
    assert!(first.warnings.iter().any(|w| w.setting == SECRET_ENV));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = Config::load(&s, &Env::default(), SecretMode::Create).unwrap();
    assert_eq!(
        second.secret_source,
        SecretSource::DevFile {
            path,
            created: false
        }
    );
    assert_eq!(first.auth.secret, second.auth.secret);
}

#[test]
fn no_dev_secret_is_created_for_a_refused_config() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        port: Some("x".into()),
        ..in_dir(dir.path())
    };
    assert!(Config::load(&s, &Env::default(), SecretMode::Create).is_err());
    assert!(!dir.path().join("data").exists());
}

#[test]
fn misspelt_tether_variables_warn() {
    let env = Env::from_pairs([
        (SECRET_ENV, "x".repeat(40)),
        ("TETHER_HEARTBEAT_M", "1".into()),
        ("TETHER_BIN", "/usr/bin/tether".into()),
        ("TETHER_TOKEN", "not-a-setting".into()),
    ]);
    let c = Config::load(&Settings::default(), &env, SecretMode::ReadOnly).unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        ["TETHER_HEARTBEAT_M: unknown setting, ignored (did you mean TETHER_HEARTBEAT_MS?)"]
    );
    assert_eq!(env::edit_distance("TETHER_HOST", "TETHER_HSOT"), 2);
    assert_eq!(env::edit_distance("", "abc"), 3);
}

#[test]
fn limits_are_settings() {
    let s = Settings {
        max_message_bytes: Some("1024".into()),
        max_connections: Some("5".into()),
        max_connections_per_ip: Some("2".into()),
        max_connections_per_sub: Some("3".into()),
        upgrade_burst: Some("100".into()),
        upgrade_per_sec: Some("0.5".into()),
        publish_burst: Some("7".into()),
        publish_per_sec: Some("3".into()),
        auth_failure_threshold: Some("4".into()),
        auth_failure_window_ms: Some("1000".into()),
        auth_failure_cooldown_ms: Some("2000".into()),
        outbound_queue: Some("16".into()),
        retention_messages: Some("50".into()),
        retention_max_age_secs: Some("60".into()),
        dedup_window_secs: Some("120".into()),
        sqlite_synchronous: Some("FULL".into()),
        heartbeat_ms: Some("1000".into()),
        drain_ms: Some("0".into()),
        connection_timeout_ms: Some("300".into()),
        ..Settings::default()
    };
    let c = Config::load(&s, &strong(), SecretMode::ReadOnly).unwrap();
    let l = &c.limits;
    assert_eq!(
        (
            l.max_message_bytes,
            l.max_connections,
            l.max_connections_per_ip,
            l.max_connections_per_sub
        ),
        (1024, 5, 2, Some(3))
    );
    assert_eq!(
        l.upgrade,
        RateLimit {
            burst: 100,
            per_sec: 0.5
        }
    );
    assert_eq!(
        l.publish,
        RateLimit {
            burst: 7,
            per_sec: 3.0
        }
    );
    assert_eq!(l.auth_failures.threshold, 4);
    assert_eq!(l.auth_failures.window, Duration::from_secs(1));
    assert_eq!(l.auth_failures.cooldown, Duration::from_secs(2));
    assert_eq!(l.outbound_queue, 16);
    assert_eq!(c.store.retention_messages, 50);
    assert_eq!(c.store.retention_max_age, Duration::from_secs(60));
    assert_eq!(c.store.dedup_window, Duration::from_secs(120));
    assert_eq!(c.store.synchronous, Synchronous::Full);
    assert_eq!(c.drain, Duration::ZERO);
    assert_eq!(c.connection_timeout, Duration::from_millis(300));
}

#[test]
fn cidrs() {
    let net = Cidr::parse("10.1.0.0/16").unwrap();
    assert!(net.contains("10.1.200.3".parse().unwrap()));
    assert!(!net.contains("10.2.0.1".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
    let one = Cidr::parse("127.0.0.1").unwrap();
    assert!(one.contains("127.0.0.1".parse().unwrap()));
    assert!(!one.contains("127.0.0.2".parse().unwrap()));
    let all = Cidr::parse("0.0.0.0/0").unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    let v6 = Cidr::parse("fd00::/8").unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    assert!(Cidr::parse("nonsense").is_err());
}

#[test]
fn for_tests_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::for_tests(dir.path());
    assert_eq!(c.port, 0);
    assert_eq!(c.store.path, dir.path().join("tether.db"));
    assert_eq!(c.auth.secret.expose(), TEST_SECRET.as_bytes());
    assert!(!dir.path().join(DEV_SECRET_FILE).exists());
}

#[test]
fn defaults_are_taken_from_protocol() {
    use protocol::defaults as d;
    let c = Config::load(&Settings::default(), &strong(), SecretMode::ReadOnly).unwrap();
    let ms = |x: Duration| u64::try_from(x.as_millis()).unwrap();
    assert_eq!(ms(c.heartbeat), d::HEARTBEAT_INTERVAL_MS);
    assert_eq!(ms(c.connection_timeout), d::CONNECTION_TIMEOUT_MS);
    assert_eq!(ms(c.latency_threshold), d::LATENCY_THRESHOLD_MS);
    assert_eq!(ms(c.token_expiry_notice), d::TOKEN_EXPIRING_LEAD_MS);
    assert_eq!(c.limits.max_message_bytes, d::MAX_MESSAGE_BYTES);
    assert_eq!(c.auth.leeway.as_secs(), d::JWT_LEEWAY_SECS);
    assert_eq!(c.store.retention_messages, d::RETENTION_MESSAGES);
    assert_eq!(ms(c.store.retention_max_age), d::RETENTION_MAX_AGE_MS);
    assert_eq!(ms(c.store.dedup_window), d::DEDUP_WINDOW_MS);
}
