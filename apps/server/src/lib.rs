//! Tether's server library: the `tether` binary is a thin shell over this crate.
//!
//! Table of contents:
//! - [`cli`]: the clap command line (`serve`, `token`, `check-env`) and their functions.
//! - [`config`]: settings → a validated [`config::Config`].
//! - [`store`]: the durable channel store (trait + SQLite backend with group commit).
//! - [`auth`]: HS256 JWT sign/verify.
//! - [`logging`]: the CONTRACT §7 JSON log lines.
//! - [`run`]: the server itself (HTTP + WebSocket), given a bound listener.

pub mod auth;
pub mod cli;
pub mod config;
pub mod logging;
pub mod store;

use std::future::Future;

/// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then drains.
///
/// `tether serve` calls it after validating `config`, opening the store (`opened`) and
/// binding; tests call it in-process on `127.0.0.1:0`.
///
/// Skeleton (owned by h-server-rt, who replaces the body): it only waits for `shutdown` and
/// closes the store.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: config::Config,
    opened: store::Opened,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = (&listener, &config);
    shutdown.await;
    opened.store.close().await;
    Ok(())
}
