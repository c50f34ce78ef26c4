//! `cargo xtask bench --storm N`: a reconnect storm (issue 14). `N` native clients (the
//! `client` crate, its own jittered backoff, so the figure is the product's behaviour, not the
//! generator's) subscribe to one channel; a publisher stores a first batch of messages; the
//! server is SIGKILLed right after the last ack and restarted on the same port and store;
//! once everyone is back a second batch is published.
//!
//! Reported: how long from the kill until every client is connected again, the largest share
//! of all reconnect attempts that started in any 100 ms window (goal ≤ 5 %), and whether every
//! client got every offset of both batches exactly once and in order (no lost message).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use client::{Client, ClientConfig, ClientEvent, Credentials};
use futures_util::SinkExt as _;
use protocol::{ConnectionState, Token};
use tokio_tungstenite::tungstenite::Message;

use super::load::{Ws, connect, expect_text, source};
use super::server::{self, Server};

/// Messages per batch (before the kill, after the restart).
const BATCH: u64 = 10;
/// The channel every client subscribes to.
const CHANNEL: &str = "bench:storm";
/// How long everyone may take to come back before the run gives up.
const GIVE_UP: Duration = Duration::from_secs(120);

pub fn run(release: bool, clients: usize) -> Result<()> {
    let (exe, _) = server::build_tether_and_bare(release)?;
    let dir = tempfile::tempdir().context("a temporary folder for the store")?;
    let max = clients + 1_000;
    let srv = Server::tether(&exe, dir.path(), max, None)?;
    let port = srv.addr.port();
    let token = server::token(&exe, dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("the load generator's runtime")?;
    runtime.block_on(storm(srv, &exe, dir.path(), port, max, &token, clients))
}

async fn storm(
    srv: Server,
    exe: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    max: usize,
    token: &str,
    n: usize,
) -> Result<()> {
    let url = format!("ws://{}/ws", srv.addr);
    let addr = srv.addr;
    // Attempt start times (scheduled time of each reconnect attempt).
    let attempts: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(n * 2)));
    let mut clients = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for i in 0..n {
        let mut config = ClientConfig::new(url.clone()).with_seed(i as u64 + 1);
        // 10,000 broadcast rings of the default 1,024 events would be most of the memory.
        config.event_buffer = 16;
        let c = Client::connect(config, Credentials::Token(Token::new(token.to_owned())))?;
        let mut events = c.events();
        let seen = attempts.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ClientEvent::AttemptScheduled { delay, .. }) => {
                        seen.lock()
                            .expect("not poisoned")
                            .push(Instant::now() + delay);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        clients.push(c);
    }
    // Everyone connected and subscribed before the storm.
    for c in &clients {
        let mut sub = c
            .subscribe(CHANNEL)
            .await
            .context("subscribing a storm client")?;
        readers.push(tokio::spawn(async move {
            let mut offsets = Vec::with_capacity(2 * BATCH as usize);
            while offsets.len() < 2 * BATCH as usize {
                match tokio::time::timeout(GIVE_UP, sub.next_message()).await {
                    Ok(Some(m)) => offsets.push(m.offset),
                    Ok(None) | Err(_) => break,
                }
            }
            offsets
        }));
    }
    wait_all_connected(&clients, &vec![0; n], Instant::now()).await?;
    println!("storm: {n} clients connected and subscribed to {CHANNEL}");

    let mut publisher = connect(addr, source(0), token).await?;
    publish(&mut publisher, 0).await?;
    // SIGKILL right after the last ack: deliveries may still be on their way.
    attempts.lock().expect("not poisoned").clear();
    let before: Vec<u64> = clients.iter().map(|c| c.status().reconnects).collect();
    let killed = Instant::now();
    drop(publisher);
    drop(srv);
    let srv = restart(exe, dir, max, port).await?;
    let restarted = killed.elapsed();
    let back = wait_all_connected(&clients, &before, killed).await?;
    let mut publisher = connect(addr, source(0), token).await?;
    publish(&mut publisher, BATCH).await?;

    let mut complete = 0usize;
    let mut broken = 0usize;
    let want: Vec<u64> = (1..=2 * BATCH).collect();
    for r in readers {
        if r.await? == want {
            complete += 1;
        } else {
            broken += 1;
        }
    }
    let times = attempts.lock().expect("not poisoned").clone();
    let (peak, total) = peak_share(&times, Duration::from_millis(100));
    println!(
        "storm: {n} clients, server SIGKILLed and restarted (listening again after {:.0} ms): all back after {:.2} s; {total} reconnect attempts, at most {peak} ({:.1} %) in one 100 ms window; {complete} clients got offsets 1..={} exactly once in order, {broken} did not",
        restarted.as_secs_f64() * 1_000.0,
        back.as_secs_f64(),
        if total == 0 {
            0.0
        } else {
            peak as f64 * 100.0 / total as f64
        },
        2 * BATCH
    );
    for c in &clients {
        c.close().await;
    }
    drop(srv);
    Ok(())
}

/// Starts `tether` again on `port` (the old socket's port; SO_REUSEADDR lets it rebind).
async fn restart(
    exe: &std::path::Path,
    dir: &std::path::Path,
    max: usize,
    port: u16,
) -> Result<Server> {
    let exe = exe.to_owned();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || Server::tether_on(&exe, &dir, max, None, port)).await?
}

/// Waits until every client is connected with more successful reconnections than `before`
/// (0 for the first connect); returns the time since `since`.
async fn wait_all_connected(
    clients: &[Client],
    before: &[u64],
    since: Instant,
) -> Result<Duration> {
    loop {
        let up = clients
            .iter()
            .zip(before)
            .filter(|&(c, &b)| {
                let s = c.status();
                s.state == ConnectionState::Connected
                    && (b == 0 && s.reconnects == 0 || s.reconnects > b)
            })
            .count();
        if up == clients.len() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > GIVE_UP {
            bail!("{up} of {} clients back after {GIVE_UP:?}", clients.len());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes offsets `first+1 ..= first+BATCH` and waits for every ack.
async fn publish(ws: &mut Ws, first: u64) -> Result<()> {
    for k in 1..=BATCH {
        let n = first + k;
        let frame = format!(
            r#"{{"type":"publish","id":"storm{n}","channel":"{CHANNEL}","data":{{"n":{n}}}}}"#
        );
        ws.send(Message::text(frame)).await?;
    }
    let mut acked = 0;
    while acked < BATCH {
        let v = expect_text(ws).await?;
        match v["type"].as_str() {
            Some("ack") => acked += 1,
            Some("nack") => bail!("publish refused: {v}"),
            _ => {}
        }
    }
    Ok(())
}

/// The most `times` in any window of `width` (sliding), and how many there are.
fn peak_share(times: &[Instant], width: Duration) -> (usize, usize) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut peak = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= width {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    (peak, sorted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_window_counts_the_densest_stretch() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = [at(0), at(50), at(99), at(100), at(300), at(301)];
        // [0, 100) holds 0, 50, 99; [50, 150) holds 50, 99, 100.
        assert_eq!(peak_share(&times, Duration::from_millis(100)), (3, 6));
        assert_eq!(peak_share(&[], Duration::from_millis(100)), (0, 0));
    }
}
