//! `tether admin shed --fraction F` and `tether admin purge --channel C`: HTTP clients of the
//! operator endpoints (see [`crate::admin`]). The token (with the `admin` claim, e.g. from
//! `tether token --sub ops --admin`) comes from `TETHER_TOKEN` or `--token-file`. The server's
//! JSON answer goes to stdout; an error to stderr with exit 1 (2 without a token).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::EXIT_CONFIG;
use super::probe::TOKEN_ENV;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `tether admin` arguments.
#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// The action.
    #[command(subcommand)]
    pub action: AdminAction,
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// File holding an admin token (default: the `TETHER_TOKEN` environment variable).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

/// The operator actions.
#[derive(Debug, Subcommand, Clone)]
pub enum AdminAction {
    /// Advise a random share of the open connections to reconnect later (reason `shed`) and
    /// close them with 1012: `POST /v1/admin/shed`.
    Shed {
        /// The share of connections to shed, 0.0 to 1.0.
        #[arg(long)]
        fraction: f64,
        /// Advised delays are spread over 0..this many ms [default: the server's drain window].
        #[arg(long)]
        after_ms_max: Option<u64>,
    },
    /// Delete a channel's history; its epoch changes: `DELETE /v1/channels/{channel}/messages`.
    Purge {
        /// The channel.
        #[arg(long)]
        channel: String,
    },
}

/// Runs one operator action.
#[must_use]
pub fn admin(args: &AdminArgs) -> ExitCode {
    let token = match token(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tether admin: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match request(args, &token) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether admin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: &AdminArgs) -> Result<String, String> {
    let raw = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?,
        None => std::env::var(TOKEN_ENV)
            .map_err(|_| format!("no token: set {TOKEN_ENV} or pass --token-file"))?,
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the token is empty".to_owned());
    }
    Ok(raw.to_owned())
}

fn request(args: &AdminArgs, token: &str) -> Result<String, String> {
    let base = args.url.trim_end_matches('/');
    let client = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let request = match &args.action {
        AdminAction::Shed {
            fraction,
            after_ms_max,
        } => {
            let mut body = serde_json::json!({ "fraction": fraction });
            if let Some(max) = after_ms_max {
                body["after_ms_max"] = serde_json::json!(max);
            }
            client
                .post(format!("{base}/v1/admin/shed"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
        }
        AdminAction::Purge { channel } => {
            client.delete(format!("{base}/v1/channels/{channel}/messages"))
        }
    };
    let response = request
        .bearer_auth(token)
        .send()
        .map_err(|e| format!("{base}: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .map_err(|e| format!("reading the answer: {e}"))?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}
