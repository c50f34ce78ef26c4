//! Tether's server library: the `tether` binary is a thin shell over this crate.
//!
//! Table of contents:
//! - [`cli`]: the clap command line (`serve`, `token`, `check-env`) and their functions.
//! - [`config`]: settings → a validated [`config::Config`].
//! - [`store`]: the durable channel store (trait + SQLite backend with group commit).
//! - [`auth`]: HS256 JWT sign/verify.
//! - [`logging`]: the CONTRACT §7 JSON log lines.
//! - [`run`]: the server itself (HTTP + WebSocket), given a bound listener.
//! - [`http`]: the endpoints and router; [`admission`]: who may connect; [`session`]: one
//!   WebSocket connection; [`hub`]: fan-out of committed messages in offset order;
//!   [`outbound`]: a connection's bounded queue; [`drain`]: graceful shutdown;
//!   [`latency`]: Ping→Pong round trips for `/health`; [`ratelimit`]: token buckets;
//!   [`app`]: the shared state; [`admin`]: operator actions (shed, purge).
//! - [`tls`]: direct HTTPS/WSS with rustls; [`security_headers`]: HSTS and friends;
//!   [`abuse`]: unusual patterns per IP and `sub`.
//! - [`fdlimit`]: the open-files budget and the connection limit derived from it.
//! - [`metrics`]: `GET /metrics`; [`telemetry`]: OTLP traces; [`fleet`]: client reports and
//!   the fleet view (issue 13).
//! - [`twilio`]: the Twilio voice gateway (CONTRACT §10).

pub mod abuse;
pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod drain;
pub mod fdlimit;
pub mod fleet;
pub mod http;
pub mod hub;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod ratelimit;
pub mod security_headers;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod twilio;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long the HTTP server may take to finish in-flight requests after the drain.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then drains.
///
/// `tether serve` calls it after validating `config`, opening the store (`opened`) and
/// binding; tests call it in-process on `127.0.0.1:0`.
///
/// Shutdown (CONTRACT §5.6): when `shutdown` resolves the server starts draining — admission
/// refuses new connections, `/health/ready` answers 503, every session sends `reconnect` and
/// closes with 1012 — and waits for the sessions at most the drain window. Then the listener
/// stops, the store finishes its queued writes and closes, and `run` returns `Ok`.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: config::Config,
    opened: store::Opened,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Before anything is served: a bad certificate or key stops the start.
    let tls_config = config.tls.as_ref().map(tls::load).transpose()?;
    let config = Arc::new(config);
    let store = opened.store;
    let drain = drain::Drain::new(config.drain);
    let hub = hub::Hub::new();
    let hub_task = hub.spawn(opened.events);
    // Stops the background maintenance once the sessions are gone.
    let maintenance_stop = CancellationToken::new();
    let maintenance = store::spawn_maintenance(
        store.clone(),
        config.store.maintenance_interval,
        maintenance_stop.clone(),
    );
    let app = Arc::new(app::App::new(config, store.clone(), hub, drain.clone()));
    let router = security_headers::apply(http::router(app.clone()), &app.config);

    // Stops the listener after the drain (not before: `/health` keeps answering meanwhile).
    let http_stop = CancellationToken::new();
    let serve = tls::serve(listener, router, tls_config, http_stop.clone());
    let mut server = tokio::spawn(serve);

    let served = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    if let Some(result) = served {
        // The listener failed on its own: stop everything else and report it.
        drain.start(app.admission.connections());
        drain.wait_sessions().await;
        maintenance_stop.cancel();
        store.close().await;
        result??;
        anyhow::bail!("the HTTP server stopped unexpectedly");
    }

    // The process stays up for the whole drain window (readiness answers 503 meanwhile),
    // however quickly the sessions close.
    let window_end = tokio::time::Instant::now() + app.config.drain;
    drain.start(app.admission.connections());
    let all_closed = drain.wait_sessions().await;
    tokio::time::sleep_until(window_end).await;
    if !all_closed {
        tracing::warn!(
            component = "server",
            event = "drain_incomplete",
            connections = app.admission.connections(),
        );
    }
    http_stop.cancel();
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    maintenance_stop.cancel();
    let _ = maintenance.await;
    store.close().await;
    // The hub ends when the store's writer drops the announcement channel.
    let _ = tokio::time::timeout(Duration::from_secs(1), hub_task).await;
    Ok(())
}
