//! `tether serve`: validate, install logging, open the store, bind, log `server_started`,
//! hand over to [`crate::run`].

use std::process::ExitCode;

use anyhow::Context as _;

use super::{EXIT_CONFIG, Settings};
use crate::config::{Config, Env, SecretMode};
use crate::logging::{self, LogTarget};

/// Runs the server until SIGTERM/SIGINT. Bad configuration: one line per problem on stderr,
/// exit 2, before anything listens or logs.
#[must_use]
pub fn serve(settings: &Settings) -> ExitCode {
    let config = match Config::load(settings, &Env::process(), SecretMode::Create) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = logging::init(config.log_format, LogTarget::Stdout) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    config.log_warnings();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(component = "server", event = "server_failed", error = %e);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                component = "server",
                event = "server_failed",
                error = format!("{e:#}")
            );
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    let opened = crate::store::open(&config.store)
        .await
        .with_context(|| format!("opening the store {}", config.database_url))?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr())
        .await
        .with_context(|| format!("binding {}", config.listen_addr()))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        component = "server",
        event = "server_started",
        host = %local.ip(),
        port = local.port(),
        version = env!("CARGO_PKG_VERSION"),
        store = opened.store.kind(),
        database = %config.database_url,
        environment = config.environment.as_str(),
        "listening on {local}"
    );
    crate::run(listener, config, opened, shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                // Without a SIGTERM handler, Ctrl-C still stops the server.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
