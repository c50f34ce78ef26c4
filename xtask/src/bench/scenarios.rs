//! The measurements themselves, each against a server already running: set-up rate, publish
//! → deliver through Tether (saturated or paced), and the side-by-side ones that also run
//! against the bare and Node peers (paced connects, paced pings, paced fan-out, idle memory).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::load::{
    Open, Ws, close_all, connect, expect_text, is_delivery, next_text, open_many, percentile,
    sent_micros, source,
};
use super::server::Server;

/// Publishes the publisher keeps in flight (unacknowledged) when saturating.
pub const WINDOW: usize = 256;

/// Connection set-up: rate over the run and p50/p99 of one set-up.
pub struct Setup {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `count` set-ups with [`super::load::CONNECT_CONCURRENCY`] in flight.
pub async fn setup_rate(addr: SocketAddr, how: &Open, count: usize) -> Result<Setup> {
    let started = Instant::now();
    let (conns, mut times) = open_many(addr, how, count).await?;
    let elapsed = started.elapsed();
    close_all(conns).await;
    times.sort_unstable();
    Ok(Setup {
        rate: count as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
    })
}

/// `count` set-ups started at `per_sec` (each its own task, not waiting for the others):
/// p50/p99 of one set-up at that arrival rate.
pub async fn paced_connect(
    addr: SocketAddr,
    how: &Open,
    count: usize,
    per_sec: usize,
) -> Result<Setup> {
    let started = Instant::now();
    let gap = Duration::from_secs(1).as_secs_f64() / per_sec.max(1) as f64;
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        // Sleep to the i-th arrival time (not a fixed gap, so late wake-ups catch up).
        let due = started + Duration::from_secs_f64(gap * i as f64);
        tokio::time::sleep_until(due.into()).await;
        let how = how.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ws = how.open(addr, i).await?;
            anyhow::Ok((t.elapsed(), ws))
        }));
    }
    let mut times = Vec::with_capacity(count);
    let mut conns = Vec::with_capacity(count);
    for task in tasks {
        let (t, ws) = task.await??;
        times.push(t);
        conns.push(ws);
    }
    let elapsed = started.elapsed();
    close_all(conns).await;
    times.sort_unstable();
    Ok(Setup {
        rate: count as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
    })
}

/// Round trips: p99 in ms.
pub struct Latency {
    pub p99_ms: f64,
}

fn latency(mut d: Vec<Duration>) -> Latency {
    d.sort_unstable();
    Latency {
        p99_ms: percentile(&d, 0.99),
    }
}

/// `conns` connections each sending a ping every `1/per_sec` s for `duration` and waiting for
/// its answer: Tether's `ping` → `pong`, or the peer's echo of the same frame.
pub async fn paced_ping(
    addr: SocketAddr,
    how: &Open,
    conns: usize,
    per_sec: u32,
    duration: Duration,
) -> Result<Latency> {
    let (opened, _) = open_many(addr, how, conns).await?;
    let interval = Duration::from_secs(1) / per_sec.max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for (i, mut ws) in opened.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Spread the first pings over one interval, so the load is steady.
            let phase = interval.mul_f64((i % 1_000) as f64 / 1_000.0);
            let mut tick = tokio::time::interval_at((started + phase).into(), interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rtts = Vec::new();
            let mut n = 0u64;
            while started.elapsed() < duration {
                tick.tick().await;
                n += 1;
                let sent = Instant::now();
                ws.send(Message::text(format!(r#"{{"type":"ping","id":{n}}}"#)))
                    .await?;
                next_text(&mut ws).await?;
                rtts.push(sent.elapsed());
            }
            let _ = ws.close(None).await;
            anyhow::Ok(rtts)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(latency(all))
}

/// Where a fan-out's publisher and subscribers go.
#[derive(Clone)]
pub enum FanoutTarget {
    /// Tether: subscribers on a fresh channel, the publisher publishes to it (acked after COMMIT).
    Tether(Arc<str>),
    /// A peer: subscribers on `/sub`, the publisher sends on `/pub`.
    Peer,
}

/// Publish → deliver figures.
pub struct Fanout {
    pub publish_rate: f64,
    pub deliver_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One publisher, `subscribers` readers. Without `pace` the publisher keeps [`WINDOW`]
/// publishes in flight (Tether only: throughput); with it, one message per `pace` (latency).
/// Every message carries its send time; every subscriber records the delay at arrival.
pub async fn fanout(
    addr: SocketAddr,
    target: &FanoutTarget,
    subscribers: usize,
    count: usize,
    pace: Option<Duration>,
) -> Result<Fanout> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let channel = format!("bench:fanout:{subscribers}:{run}");
    let how = match target {
        FanoutTarget::Tether(token) => {
            let name = channel.clone();
            let f: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |_| name.clone());
            Open::Tether {
                token: token.clone(),
                channel: Some(f),
            }
        }
        FanoutTarget::Peer => Open::Peer("/sub"),
    };
    let tether = matches!(target, FanoutTarget::Tether(_));
    let (subs, _) = open_many(addr, &how, subscribers).await?;
    let epoch = Instant::now();
    let mut readers = Vec::new();
    for mut ws in subs {
        readers.push(tokio::spawn(async move {
            let mut delays = Vec::with_capacity(count);
            while delays.len() < count {
                let text = next_text(&mut ws).await?;
                if tether && !is_delivery(&text) {
                    continue;
                }
                let sent = Duration::from_micros(sent_micros(&text).unwrap_or(0));
                delays.push(epoch.elapsed().saturating_sub(sent));
            }
            let _ = ws.close(None).await;
            anyhow::Ok(delays)
        }));
    }
    let mut publisher = match target {
        FanoutTarget::Tether(token) => connect(addr, source(0), token).await?,
        FanoutTarget::Peer => super::load::upgrade(addr, source(0), "/pub").await?,
    };
    let started = Instant::now();
    let mut in_flight = 0usize;
    let mut acked = 0usize;
    for n in 0..count {
        if let Some(pace) = pace {
            tokio::time::sleep_until(
                (started + pace * u32::try_from(n).unwrap_or(u32::MAX)).into(),
            )
            .await;
        }
        if tether && in_flight >= WINDOW {
            acked += wait_acks(&mut publisher, 1).await?;
            in_flight -= 1;
        }
        let t = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let frame = if tether {
            format!(r#"{{"type":"publish","id":"b{n}","channel":"{channel}","data":{{"t":{t}}}}}"#)
        } else {
            format!(r#"{{"t":{t}}}"#)
        };
        publisher.feed(Message::text(frame)).await?;
        if pace.is_some() || n % 32 == 31 {
            publisher.flush().await?;
        }
        in_flight += 1;
        // Paced, the acks are read as they come, so they never pile up unread.
        if tether && pace.is_some() {
            while let Some(Some(Ok(msg))) = futures_util::FutureExt::now_or_never(publisher.next())
            {
                let k = count_ack(&msg)?;
                acked += k;
                in_flight = in_flight.saturating_sub(k);
            }
        }
    }
    publisher.flush().await?;
    if tether {
        acked += wait_acks(&mut publisher, in_flight).await?;
    }
    let published = started.elapsed();
    let mut delays = Vec::with_capacity(count * subscribers);
    for reader in readers {
        delays.extend(reader.await??);
    }
    let delivered = started.elapsed();
    let _ = publisher.close(None).await;
    if tether && acked != count {
        bail!("{acked} acks for {count} publishes");
    }
    delays.sort_unstable();
    Ok(Fanout {
        publish_rate: count as f64 / published.as_secs_f64(),
        deliver_rate: (count * subscribers) as f64 / delivered.as_secs_f64(),
        p50_ms: percentile(&delays, 0.50),
        p99_ms: percentile(&delays, 0.99),
    })
}

fn count_ack(msg: &Message) -> Result<usize> {
    let Message::Text(t) = msg else {
        return Ok(0);
    };
    if t.starts_with(r#"{"type":"ack""#) {
        Ok(1)
    } else if t.starts_with(r#"{"type":"nack""#) {
        bail!("publish refused: {}", t.as_str())
    } else {
        Ok(0)
    }
}

async fn wait_acks(ws: &mut Ws, n: usize) -> Result<usize> {
    let mut got = 0;
    while got < n {
        let v = expect_text(ws).await?;
        match v["type"].as_str() {
            Some("ack") => got += 1,
            Some("nack") => bail!("publish refused: {v}"),
            _ => {}
        }
    }
    Ok(got)
}

/// Server RSS at 10 % and 100 % of the idle connections, and the growth per connection.
pub struct Memory {
    pub before_kib: u64,
    pub after_kib: u64,
    pub per_connection_bytes: f64,
}

/// RSS growth per connection between 10 % and 100 % of `count` idle connections opened as
/// `how` says: the marginal cost of one more, without the one-time growth of allocator arenas
/// and tables that the first connections pay for.
pub async fn idle_memory(server: &Server, how: &Open, count: usize) -> Result<Memory> {
    let first = (count / 10).max(1);
    let (mut conns, _) = open_many(server.addr, how, first).await?;
    // Let the server settle (its per-connection tasks park on their sockets).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kib = server.rss_kib()?;
    let (rest, _) = open_many(server.addr, how, count - first).await?;
    conns.extend(rest);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kib = server.rss_kib()?;
    close_all(conns).await;
    Ok(Memory {
        before_kib,
        after_kib,
        per_connection_bytes: after_kib.saturating_sub(before_kib) as f64 * 1024.0
            / (count - first) as f64,
    })
}

/// The Tether crowd of idle, authenticated connections subscribed over 100 channels.
pub fn idle_tether(token: &Arc<str>) -> Open {
    Open::Tether {
        token: token.clone(),
        channel: Some(Arc::new(|i| format!("bench:idle:{}", i % 100))),
    }
}
