//! `tether simulate-call --url URL [--seconds S] [--calls N] [--drop-after S]` (CONTRACT
//! §10.6): plays Twilio against a running Tether with [`crate::twilio::player`] and prints one
//! line per call. The auth token comes from `TWILIO_AUTH_TOKEN` or `--auth-token-file` (never
//! a plain flag); `PUBLIC_URL` (or `--public-url`) is what the requests are signed over, since
//! Tether checks signatures against its public URL, not the address it is reached at.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::EXIT_CONFIG;
use crate::twilio::player::{PlayOptions, Player};

/// `tether simulate-call` arguments.
#[derive(Debug, Args, Clone)]
pub struct SimulateCallArgs {
    /// Where Tether listens, e.g. `http://127.0.0.1:8081`.
    #[arg(long)]
    pub url: String,
    /// Seconds of audio each call streams.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Calls played at the same time.
    #[arg(long, default_value_t = 1)]
    pub calls: u32,
    /// Drop each call's stream (no `stop`) after this many seconds, once, and follow the resume.
    #[arg(long)]
    pub drop_after: Option<f64>,
    /// The public URL Tether signs with [default: `PUBLIC_URL`, else `--url`].
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File holding the Twilio auth token [default: the `TWILIO_AUTH_TOKEN` variable].
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// The `AccountSid` sent.
    #[arg(
        long,
        env = "TWILIO_ACCOUNT_SID",
        default_value = "AC00000000000000000000000000000000"
    )]
    pub account_sid: String,
}

/// Plays the calls; exit 0 when every call was played, 1 when one failed, 2 on bad arguments.
#[must_use]
pub fn simulate_call(args: &SimulateCallArgs) -> ExitCode {
    let options = match options(args) {
        Ok(o) => o,
        Err(problem) => {
            eprintln!("tether simulate-call: {problem}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let calls = args.calls;
    runtime.block_on(async move {
        let player = match Player::new(options) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("tether simulate-call: {e}");
                return ExitCode::FAILURE;
            }
        };
        let run = std::process::id();
        let plays = (0..calls).map(|i| {
            let player = player.clone();
            tokio::spawn(async move {
                let sid = format!("CAsim{run:08x}{i:04}");
                (sid.clone(), player.play(&sid).await)
            })
        });
        let mut failed = false;
        for play in futures_util::future::join_all(plays).await {
            match play {
                Ok((_, Ok(report))) => println!("{report}"),
                Ok((sid, Err(e))) => {
                    failed = true;
                    println!("call {sid} failed: {e}");
                }
                Err(e) => {
                    failed = true;
                    println!("a call task failed: {e}");
                }
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn options(args: &SimulateCallArgs) -> Result<PlayOptions, String> {
    let target = url::Url::parse(&args.url).map_err(|e| format!("--url {:?}: {e}", args.url))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!("--url {:?}: use http:// or https://", args.url));
    }
    let auth_token = match &args.auth_token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--auth-token-file {path:?}: {e}"))?
            .trim_end()
            .to_owned(),
        None => std::env::var("TWILIO_AUTH_TOKEN")
            .map_err(|_| "set TWILIO_AUTH_TOKEN or --auth-token-file".to_owned())?,
    };
    if auth_token.is_empty() {
        return Err("the Twilio auth token is empty".into());
    }
    let seconds = |name: &str, v: f64| {
        if v.is_finite() && (0.0..=86_400.0).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(format!("{name} {v}: between 0 and 86400"))
        }
    };
    Ok(PlayOptions {
        public_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| args.url.trim_end_matches('/').to_owned()),
        target,
        auth_token: auth_token.into_bytes(),
        account_sid: args.account_sid.clone(),
        duration: seconds("--seconds", args.seconds)?,
        drop_after: args
            .drop_after
            .map(|v| seconds("--drop-after", v))
            .transpose()?,
    })
}
