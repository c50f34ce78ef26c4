//! `tether serve`: validate, install logging, open the store, bind, log `server_started`,
//! hand over to [`crate::run`].

use std::process::ExitCode;

use anyhow::Context as _;
use tracing::Instrument as _;

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
    // Kept to the end of `serve`, after the runtime is gone: dropping it flushes OTLP spans.
    let _log_guard = match logging::init(
        config.log_format,
        LogTarget::Stdout,
        crate::telemetry::Target::from_config(&config).as_ref(),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
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
    let result = runtime.block_on(start(config));
    // The runtime goes first, so the OTLP flush in the guard's drop runs outside it.
    drop(runtime);
    match result {
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

async fn start(mut config: Config) -> anyhow::Result<()> {
    crate::fdlimit::apply(&mut config);
    // A span around start-up, so an OTLP collector sees each start and how long it took.
    let startup = tracing::info_span!("tether.startup");
    let opened = crate::store::open(&config.store)
        .instrument(startup.clone())
        .await
        .with_context(|| format!("opening the store {}", config.database_url))?;
    // Before anything is announced, so a supervisor's early SIGTERM is a graceful stop.
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(config.listen_addr())
        .await
        .with_context(|| format!("binding {}", config.listen_addr()))?;
    let local = listener.local_addr().context("reading the bound address")?;
    startup.in_scope(|| {
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
    });
    drop(startup);
    crate::run(listener, config, opened, shutdown).await
}

/// Installs the SIGTERM/SIGINT handlers **now** (so a signal that arrives before the future is
/// first polled is not lost, nor kills the process) and resolves on the first of them. Call it
/// inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                    one.recv().await;
                }
                (Err(_), Err(_)) => {
                    // No handler could be installed: never resolve; the default action of the
                    // signal then ends the process.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            // Without Ctrl-C support there is nothing to wait for.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
