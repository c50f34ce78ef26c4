//! `tether token`: print a signed HS256 JWT made with the configured secret.

use std::process::ExitCode;
use std::time::Duration;

use protocol::ChannelGlob;

use super::{EXIT_CONFIG, TokenArgs};
use crate::auth::{Authenticator, IssueRequest, unix_now};
use crate::config::{Config, Env, SecretMode};

/// Prints the token on stdout (one line); warnings and errors on stderr. Bad settings or
/// globs: exit 2.
#[must_use]
pub fn token(args: &TokenArgs) -> ExitCode {
    let mut problems = Vec::new();
    if args.sub.trim().is_empty() {
        problems.push("--sub: must not be empty".to_owned());
    }
    let mut globs = |flag: &str, list: &[String]| -> Vec<ChannelGlob> {
        list.iter()
            .filter_map(|g| match ChannelGlob::parse(g) {
                Ok(glob) => Some(glob),
                Err(e) => {
                    problems.push(format!("{flag}: invalid channel glob {g:?}: {e}"));
                    None
                }
            })
            .collect()
    };
    let subscribe = globs("--subscribe", &args.subscribe);
    let publish = globs("--publish", &args.publish);
    if args.ttl == 0 {
        problems.push("--ttl: must be at least 1 second".to_owned());
    }
    let config = match Config::load(&args.settings, &Env::process(), SecretMode::Create) {
        Ok(c) => Some(c),
        Err(errors) => {
            problems.extend(errors.0.iter().map(ToString::to_string));
            None
        }
    };
    let Some(config) = config.filter(|_| problems.is_empty()) else {
        for p in problems {
            eprintln!("{p}");
        }
        return ExitCode::from(EXIT_CONFIG);
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let auth = Authenticator::new(&config.auth);
    let request = IssueRequest {
        sub: args.sub.clone(),
        subscribe,
        publish,
        ttl: Duration::from_secs(args.ttl),
        admin: args.admin,
    };
    match auth.issue(request, unix_now()) {
        Ok((token, _claims)) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot sign the token: {e}");
            ExitCode::FAILURE
        }
    }
}
