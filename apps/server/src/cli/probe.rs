//! `tether probe --url URL [--channel C] [--json] [--token-file F]`: a live view of one
//! connection's state, RTT and quality through `crates/client` (CONTRACT §1). The token comes
//! from `TETHER_TOKEN` or `--token-file` (re-read on every reconnect, so a rotated token is
//! picked up); never from a plain flag, so it does not show in process lists.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use client::probe::ProbeOptions;
use client::{Credentials, TokenError};
use protocol::Token;

use super::EXIT_CONFIG;

/// The environment variable holding the probe's token.
pub const TOKEN_ENV: &str = "TETHER_TOKEN";

/// `tether probe` arguments.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// The WebSocket endpoint, e.g. `ws://127.0.0.1:8081/ws`.
    #[arg(long)]
    pub url: String,
    /// A channel to subscribe to; received messages are counted.
    #[arg(long)]
    pub channel: Option<String>,
    /// One JSON line per second instead of the live view.
    #[arg(long)]
    pub json: bool,
    /// File holding the token (default: the `TETHER_TOKEN` environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// Runs the probe until Ctrl-C or `--duration`. Exit 2 without a token or with a bad URL.
#[must_use]
pub fn probe(args: &ProbeArgs) -> ExitCode {
    let credentials = match credentials(args) {
        Ok(c) => c,
        Err(problem) => {
            eprintln!("{problem}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = ProbeOptions {
        url: args.url.clone(),
        channel: args.channel.clone(),
        json: args.json,
        duration: args.duration.map(Duration::from_secs),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(client::probe::run(options, credentials, std::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tether probe: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn credentials(args: &ProbeArgs) -> Result<Credentials, String> {
    if let Some(path) = &args.token_file {
        let first = read_token(path).map_err(|e| format!("--token-file: {e}"))?;
        drop(first);
        let path = path.clone();
        return Ok(Credentials::provider(move || {
            let token = read_token(&path).map_err(TokenError::Unavailable);
            async move { token }
        }));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(raw) if !raw.trim().is_empty() => Ok(Credentials::Token(Token::new(raw.trim()))),
        _ => Err(format!(
            "tether probe needs a token: set {TOKEN_ENV} or pass --token-file (e.g. from `tether token`)"
        )),
    }
}

fn read_token(path: &std::path::Path) -> Result<Token, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Token::new(raw))
}
