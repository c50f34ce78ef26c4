//! The `tether` command line (clap, derive + env).
//!
//! API summary:
//! - [`Cli`] / [`Command`]: `tether serve`, `tether token`, `tether check-env`, `tether probe`,
//!   `tether admin shed|purge` (operator actions, [`AdminArgs`]).
//! - [`Settings`]: every setting of CONTRACT §2 plus the limits of §4/§5, each a `--flag` and a
//!   `TETHER_*` (or contract-named) environment variable. All fields are raw `Option<String>`
//!   on purpose: parsing happens in [`crate::config::Config::load`], which collects *every*
//!   problem and names the setting, instead of clap stopping at the first.
//!   `Settings::default()` is "nothing given" and is what tests start from.
//! - [`TokenArgs`]: `tether token --sub ID [--subscribe GLOB].. [--publish GLOB].. [--ttl SECS] [--admin]`.
//!
//! - [`dispatch`]`(Cli) -> ExitCode`, and one function per command: [`serve`], [`token`],
//!   [`check_env`]. Exit codes: 0 fine, 1 runtime failure / failed check, 2 bad configuration.
//!
//! Secrets are never plain flag values: `TETHER_JWT_SECRET` is read from the environment only
//! (see [`crate::config::SECRET_ENV`]); `--jwt-secret-file` / `TETHER_JWT_SECRET_FILE` name a file.

mod admin;
mod check_env;
mod probe;
mod serve;
mod simulate_call;
mod token;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use admin::{AdminAction, AdminArgs, admin};
pub use check_env::check_env;
pub use probe::{ProbeArgs, probe};
pub use serve::{serve, shutdown_signal};
pub use simulate_call::{SimulateCallArgs, simulate_call};
pub use token::token;

/// Exit status for bad configuration (CONTRACT §2).
pub const EXIT_CONFIG: u8 = 2;

/// Runs a parsed command line; `main` is `ExitCode` of this.
#[must_use]
pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(settings) => serve(&settings),
        Command::Token(args) => token(&args),
        Command::CheckEnv(settings) => check_env(&settings),
        Command::Probe(args) => probe(&args),
        Command::Admin(args) => admin(&args),
        Command::SimulateCall(args) => simulate_call(&args),
    }
}

/// `tether`: the Tether WebSocket gateway.
#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Tether: a durable WebSocket gateway"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP + WebSocket). The only command that logs to stdout.
    Serve(Settings),
    /// Print a signed HS256 JWT made with the configured secret.
    Token(TokenArgs),
    /// Validate configuration and environment; one line per check; non-zero exit on a failure.
    CheckEnv(Settings),
    /// A live view of one connection's state, RTT and quality (token from `TETHER_TOKEN` or
    /// `--token-file`).
    Probe(ProbeArgs),
    /// Operator actions against a running server: `shed` connections, `purge` a channel
    /// (an admin token from `TETHER_TOKEN` or `--token-file`).
    Admin(AdminArgs),
    /// Play Twilio against a running Tether: signed webhooks, a media stream of 20 ms frames,
    /// marks and DTMF, an optional drop and resume; one line per call.
    SimulateCall(SimulateCallArgs),
}

/// `tether token` arguments: the claims plus the same settings `serve` takes, so the secret is
/// resolved exactly as the server resolves it (a dev token works against a dev server that uses
/// the same data folder).
#[derive(Debug, Args, Default, Clone)]
pub struct TokenArgs {
    /// The `sub` claim (user or service id).
    #[arg(long)]
    pub sub: String,
    /// A channel glob the token may subscribe to (`room:1`, `room:*`, `*`); repeatable.
    #[arg(long = "subscribe", value_name = "GLOB")]
    pub subscribe: Vec<String>,
    /// A channel glob the token may publish to; repeatable.
    #[arg(long = "publish", value_name = "GLOB")]
    pub publish: Vec<String>,
    /// Lifetime in seconds (`exp` = now + ttl).
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Set the `admin` claim.
    #[arg(long)]
    pub admin: bool,
    /// The server settings (database location, environment, secret source, issuer, audience).
    #[command(flatten)]
    pub settings: Settings,
}

/// Every server setting, raw. Defaults are applied and checked by
/// [`crate::config::Config::load`]; the defaults are given in each flag's help.
#[derive(Debug, Args, Default, Clone)]
pub struct Settings {
    /// Listen address [default: 127.0.0.1].
    #[arg(long, env = "TETHER_HOST")]
    pub host: Option<String>,
    /// Listen port, HTTP and WebSocket [default: 8081].
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// `sqlite:PATH` (embedded) or `postgres://…` [default: sqlite://data/tether.db].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// `development` or `production` [default: development].
    #[arg(long = "env", env = "TETHER_ENV")]
    pub environment: Option<String>,
    /// File holding the HS256 secret (or set TETHER_JWT_SECRET in the environment). Development
    /// without either: generated once into `dev-secret` beside the database.
    #[arg(long, env = "TETHER_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "TETHER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "TETHER_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The one token algorithm accepted: HS256 (the secret), or RS256 / EdDSA verified with
    /// --jwt-public-key-file [default: HS256].
    #[arg(long, env = "TETHER_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// PEM public key that verifies RS256 / EdDSA tokens (required with them).
    #[arg(long, env = "TETHER_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<String>,
    /// Comma list of allowed browser origins, exact scheme://host:port
    /// [default in development: http://localhost:3000,http://127.0.0.1:3000; production: none].
    #[arg(long, env = "TETHER_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Comma list of CIDRs whose X-Forwarded-For / X-Forwarded-Proto are believed [default: none].
    #[arg(long, env = "TETHER_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// PEM certificate chain: serve HTTPS/WSS directly (needs --tls-key).
    #[arg(long, env = "TETHER_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TETHER_TLS_KEY")]
    pub tls_key: Option<String>,
    /// Folder of the built web app, served at `/`.
    #[arg(long, env = "TETHER_WEB_DIR")]
    pub web_dir: Option<String>,
    /// Heartbeat interval told to clients, ms [default: 30000].
    #[arg(long, env = "TETHER_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<String>,
    /// Drain window on shutdown, ms [default: 5000].
    #[arg(long, env = "TETHER_DRAIN_MS")]
    pub drain_ms: Option<String>,
    /// `json` (CONTRACT §7 lines) or `pretty` [default: json].
    #[arg(long, env = "TETHER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Time a client has to send `hello` after the upgrade, ms [default: 5000].
    #[arg(long, env = "TETHER_CONNECTION_TIMEOUT_MS")]
    pub connection_timeout_ms: Option<String>,
    /// Largest WebSocket message or HTTP publish body, bytes [default: 65536].
    #[arg(long, env = "TETHER_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<String>,
    /// Open WebSocket connections on this process [default: 10000].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Concurrent connections per client IP [default: 1000].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<String>,
    /// Concurrent connections per token `sub` [default: no cap].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_SUB")]
    pub max_connections_per_sub: Option<String>,
    /// WebSocket upgrade token bucket per client IP: burst [default: 20].
    #[arg(long, env = "TETHER_UPGRADE_BURST")]
    pub upgrade_burst: Option<String>,
    /// WebSocket upgrade token bucket per client IP: refill per second [default: 10].
    #[arg(long, env = "TETHER_UPGRADE_PER_SEC")]
    pub upgrade_per_sec: Option<String>,
    /// Authentication failures from one IP that trigger the cool-down [default: 20].
    #[arg(long, env = "TETHER_AUTH_FAILURE_THRESHOLD")]
    pub auth_failure_threshold: Option<String>,
    /// Window in which those failures are counted, ms [default: 60000].
    #[arg(long, env = "TETHER_AUTH_FAILURE_WINDOW_MS")]
    pub auth_failure_window_ms: Option<String>,
    /// Cool-down after the threshold is reached, ms [default: 60000].
    #[arg(long, env = "TETHER_AUTH_FAILURE_COOLDOWN_MS")]
    pub auth_failure_cooldown_ms: Option<String>,
    /// Rate-limit refusals of one IP within that window that trigger the same cool-down; 0: off
    /// [default: 600].
    #[arg(long, env = "TETHER_ABUSE_RATE_LIMITED")]
    pub abuse_rate_limited: Option<String>,
    /// Protocol errors (bad, binary, non-UTF-8, oversized frames) of one IP within that window
    /// that trigger the same cool-down; 0: off [default: 200].
    #[arg(long, env = "TETHER_ABUSE_PROTOCOL_ERRORS")]
    pub abuse_protocol_errors: Option<String>,
    /// Per-connection publish token bucket: burst [default: 1000].
    #[arg(long, env = "TETHER_PUBLISH_BURST")]
    pub publish_burst: Option<String>,
    /// Per-connection publish token bucket: refill per second [default: 500].
    #[arg(long, env = "TETHER_PUBLISH_PER_SEC")]
    pub publish_per_sec: Option<String>,
    /// Frames queued towards one connection before it counts as a slow consumer [default: 1024].
    #[arg(long, env = "TETHER_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<String>,
    /// Retention: newest messages kept per channel [default: 10000].
    #[arg(long, env = "TETHER_RETENTION_MESSAGES")]
    pub retention_messages: Option<String>,
    /// Retention: maximum message age, seconds [default: 86400].
    #[arg(long, env = "TETHER_RETENTION_MAX_AGE_SECS")]
    pub retention_max_age_secs: Option<String>,
    /// Deduplication window for publish ids, seconds, independent of retention [default: 86400].
    #[arg(long, env = "TETHER_DEDUP_WINDOW_SECS")]
    pub dedup_window_secs: Option<String>,
    /// How often retention and dedup expiry run, ms [default: 60000].
    #[arg(long, env = "TETHER_MAINTENANCE_INTERVAL_MS")]
    pub maintenance_interval_ms: Option<String>,
    /// SQLite `synchronous`: `normal` (survives a process crash) or `full` (also power loss)
    /// [default: normal].
    #[arg(long, env = "TETHER_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<String>,
    /// Largest group-commit batch (publishes per transaction) [default: 512].
    #[arg(long, env = "TETHER_STORE_BATCH_MAX")]
    pub store_batch_max: Option<String>,
    /// Latency above which health is `degraded` and `latency_spike` is logged, ms [default: 200].
    #[arg(long, env = "TETHER_LATENCY_THRESHOLD_MS")]
    pub latency_threshold_ms: Option<String>,
    /// How long before `exp` the server sends `token_expiring`, ms [default: 60000].
    #[arg(long, env = "TETHER_TOKEN_EXPIRY_NOTICE_MS")]
    pub token_expiry_notice_ms: Option<String>,
    /// Twilio account SID (all four Twilio settings or none).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// File holding the Twilio auth token (or set TWILIO_AUTH_TOKEN in the environment).
    #[arg(long, env = "TWILIO_AUTH_TOKEN_FILE")]
    pub twilio_auth_token_file: Option<String>,
    /// Twilio sender phone number.
    #[arg(long, env = "TWILIO_PHONE_NUMBER")]
    pub twilio_phone_number: Option<String>,
    /// Public base URL of this server (for Twilio callbacks).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where OTLP traces go (http/protobuf); unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    // Tokens (helper `core`, issue 10).
    /// A JWT whose `exp` lies further than this in the future at verification is refused (`AUTH_FAILURE`), s [default: 86400].
    #[arg(long, env = "TETHER_MAX_TOKEN_TTL_SECS")]
    pub max_token_ttl_secs: Option<String>,

    // Observability (issue 13, helper obs).
    /// File holding the bearer token `GET /metrics` asks for (or set TETHER_METRICS_TOKEN in the environment); unset: `/metrics` is open.
    #[arg(long, env = "TETHER_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<String>,

    // --- Twilio voice gateway (helper `twilio`, CONTRACT §2/§10) ---
    /// The upstream voice agent for Twilio calls: a ws:// or wss:// URL, or builtin:echo
    /// [default: builtin:echo].
    #[arg(long, env = "TETHER_AGENT_URL")]
    pub agent_url: Option<String>,
    /// How many times one call's media stream may be re-established after it dropped
    /// [default: 3].
    #[arg(long, env = "TETHER_CALL_RESUMES")]
    pub call_resumes: Option<String>,
    /// Inbound call audio held while the agent link is down, ms; the oldest is dropped beyond it
    /// [default: 2000].
    #[arg(long, env = "TETHER_CALL_BUFFER_MS")]
    pub call_buffer_ms: Option<String>,

    // Several nodes (CONTRACT §12).
    /// This process's name among several nodes, shown in `/health` as `node` [default: random
    /// `n_` + 8 hex].
    #[arg(long, env = "TETHER_NODE_ID")]
    pub node_id: Option<String>,
}

impl Settings {
    /// The environment variable names of every setting, as clap knows them (used to warn about
    /// unknown `TETHER_*` variables, which are usually typos).
    #[must_use]
    pub fn env_names() -> Vec<String> {
        use clap::CommandFactory;
        #[derive(Debug, Parser)]
        struct Probe {
            #[command(flatten)]
            settings: Settings,
        }
        Probe::command()
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect()
    }
}

/// The settings as a Markdown table (flag, environment variable, meaning with default), from
/// the clap definitions themselves; `docs/configuration.md` embeds it and a test keeps the two
/// equal.
#[must_use]
pub fn settings_markdown() -> String {
    use clap::CommandFactory;
    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
    }
    let mut out = String::from("| flag | environment | meaning [default] |\n|---|---|---|\n");
    for arg in Probe::command().get_arguments() {
        let Some(long) = arg.get_long().filter(|l| !matches!(*l, "help" | "version")) else {
            continue;
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let help = arg
            .get_help()
            .map(ToString::to_string)
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        out.push_str(&format!("| `--{long}` | {env} | {help} |\n"));
    }
    out.push_str(
        "| — | `TETHER_JWT_SECRET` | The HS256 key itself: environment only, never a flag (or use --jwt-secret-file). At least 32 bytes in production. |\n",
    );
    out.push_str(
        "| — | `TWILIO_AUTH_TOKEN` | The Twilio auth token: environment only (or --twilio-auth-token-file). |\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// `docs/configuration.md` shows exactly the settings clap knows; `UPDATE_EXPECT=1`
    /// rewrites it.
    #[test]
    fn configuration_doc_is_current() {
        const START: &str = "<!-- settings:start (generated by `UPDATE_EXPECT=1 cargo test -p server configuration_doc`) -->\n";
        const END: &str = "<!-- settings:end -->";
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
        let (head, rest) = doc.split_once(START).expect("start marker");
        let (_, tail) = rest.split_once(END).expect("end marker");
        let fresh = format!("{head}{START}{}{END}{tail}", settings_markdown());
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, &fresh).expect("write docs/configuration.md");
        } else {
            assert!(
                doc == fresh,
                "docs/configuration.md is stale: run UPDATE_EXPECT=1 cargo test -p server configuration_doc"
            );
        }
    }

    #[test]
    fn env_names_cover_the_contract() {
        let names = Settings::env_names();
        for n in [
            "TETHER_HOST",
            "PORT",
            "DATABASE_URL",
            "TETHER_ENV",
            "TETHER_JWT_SECRET_FILE",
            "TETHER_ALLOWED_ORIGINS",
            "TETHER_TRUSTED_PROXIES",
            "TETHER_TLS_CERT",
            "TETHER_TLS_KEY",
            "TETHER_WEB_DIR",
            "TETHER_HEARTBEAT_MS",
            "TETHER_DRAIN_MS",
            "TETHER_LOG_FORMAT",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_PHONE_NUMBER",
            "PUBLIC_URL",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
    }
}
