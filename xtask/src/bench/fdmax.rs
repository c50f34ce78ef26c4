//! `cargo xtask bench --fd-max N`: connections up to the machine's open-files cap (issue 14).
//!
//! Tether is started with `TETHER_MAX_CONNECTIONS` far above what its descriptors allow, so
//! the limit in force is the one it derives from its open-files budget at start
//! (`apps/server/src/fdlimit.rs`). The load generator then attempts `N` authenticated
//! connections ([`super::load::CONNECT_CONCURRENCY`] in flight) and sorts them: admitted
//! (`welcome` received), refused with `503` (the admission limit), or failed otherwise
//! (a timeout, a reset: what EMFILE on accept looks like from outside). Every admitted
//! connection then sends a `ping` and must get an answer, and the server's output is scanned
//! for `Too many open files`.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::{self, Message};

use super::load::{Open, Ws, close_all, next_text};
use super::server::{self, Server};

/// What `attempts` connections came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub admitted: usize,
    pub refused_503: usize,
    pub failed: usize,
    /// Admitted connections whose `ping` was answered.
    pub working: usize,
    /// Lines of server output that mention `Too many open files`.
    pub emfile_lines: usize,
    /// The first error of another kind, for the report.
    pub first_failure: Option<String>,
}

pub fn run(release: bool, attempts: usize) -> Result<()> {
    // The same build as `--peers`, so no second release build of the server.
    let (exe, _) = server::build_tether_and_bare(release)?;
    let dir = tempfile::tempdir().context("a temporary folder for the store")?;
    // Far above the descriptors: the derived cap is what limits.
    let srv = Server::tether(&exe, dir.path(), 1_000_000, None)?;
    let token: Arc<str> = Arc::from(server::token(&exe, dir.path())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("the load generator's runtime")?;
    let outcome = runtime.block_on(attempt(&srv, &token, attempts))?;
    println!(
        "fd-max: {attempts} attempts against tether (soft NOFILE {}): {} admitted, {} refused 503, {} failed otherwise; {} of the admitted answered a ping; {} server lines with `Too many open files`{}",
        nofile_of(srv.pid()).unwrap_or_else(|| "?".to_owned()),
        outcome.admitted,
        outcome.refused_503,
        outcome.failed,
        outcome.working,
        outcome.emfile_lines,
        outcome
            .first_failure
            .as_deref()
            .map(|e| format!("; first other failure: {e}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// The `Max open files` soft limit of process `pid`, from `/proc/<pid>/limits`.
fn nofile_of(pid: u32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

async fn attempt(srv: &Server, token: &Arc<str>, attempts: usize) -> Result<Outcome> {
    let how = Open::Tether {
        token: token.clone(),
        channel: None,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..super::load::CONNECT_CONCURRENCY.min(attempts) {
        let next = next.clone();
        let how = how.clone();
        let addr = srv.addr;
        workers.push(tokio::spawn(async move {
            let mut opened: Vec<Ws> = Vec::new();
            let mut outcome = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= attempts {
                    break;
                }
                match how.open(addr, i).await {
                    Ok(ws) => opened.push(ws),
                    Err(e) if is_503(&e) => outcome.refused_503 += 1,
                    Err(e) => {
                        outcome.failed += 1;
                        outcome
                            .first_failure
                            .get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (opened, outcome)
        }));
    }
    let mut conns = Vec::with_capacity(attempts);
    let mut total = Outcome::default();
    for worker in workers {
        let (opened, o) = worker.await?;
        conns.extend(opened);
        total.refused_503 += o.refused_503;
        total.failed += o.failed;
        if total.first_failure.is_none() {
            total.first_failure = o.first_failure;
        }
    }
    total.admitted = conns.len();
    // Every admitted connection works: a ping each, all at once.
    let pings = conns.into_iter().map(|mut ws| async move {
        let ok = ws
            .send(Message::text(r#"{"type":"ping","id":1}"#))
            .await
            .is_ok()
            && next_text(&mut ws)
                .await
                .is_ok_and(|t| t.starts_with(r#"{"type":"pong""#));
        (ok, ws)
    });
    let answered = futures_util::future::join_all(pings).await;
    total.working = answered.iter().filter(|(ok, _)| *ok).count();
    close_all(answered.into_iter().map(|(_, ws)| ws).collect()).await;
    total.emfile_lines = srv.emfile_lines();
    Ok(total)
}

fn is_503(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 503
    )
}
