//! The crowd simulation: 1,000 clients lose the server at the same instant; it comes back
//! 10 s later. Do their reconnect attempts spread out, and how soon are all back?
//!
//! Every client is its own [`Connection`] machine with its own seed, driven on one virtual
//! clock by an event queue. While the server is down an attempt is refused at once
//! (`connection refused`); once it is back an attempt opens after 20 ms and gets `welcome`
//! 20 ms later. Run with `--nocapture` to see the measured figures.
//!
//! # The bounds, from the backoff formula
//!
//! With equal jitter the k-th retry waits within `[d_k/2, d_k]`, `d_k` = 1, 2, 4, 8, 16 s. So
//! retry k happens between `Σ d_i/2` and `Σ d_i` after the loss: retry 3 by 7 s at the latest
//! (always while the server is down), retry 4 between 7.5 s and 15 s, retry 5 no earlier than
//! 15.5 s (always after the server is back). So at most 4 attempts fail, the breaker (5
//! failures) never opens, and the latest reconnect is retry 5 after a retry 4 that failed just
//! before 10 s: 10 s + 16 s = 26 s after the loss, **16 s after the server returns**
//! (+ 40 ms of handshake).
//!
//! Spread: retry 4 is a sum of four independent uniform delays (standard deviation ≈ 1.3 s),
//! so its density peaks near 3 % of the crowd per 100 ms; retry 5 lands over `[15.5 s, 31 s]`.
//! The test asserts that **no 100 ms window after the server returns holds more than 5 % of
//! the crowd's attempts** (without jitter, all 1,000 would land in the same millisecond).
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use protocol::{CloseCode, Pong, ServerMessage, Timestamp, Welcome};
use resilience::{Config, Connection, Event, Input, Instant, Output};

const CLIENTS: usize = 1_000;
/// The server dies at 60 s (the clients have been connected long enough to count as healthy)…
const LOSS_MS: u64 = 60_000;
/// …and is back 10 s later.
const BACK_MS: u64 = 70_000;
/// Simulated until well past every bound.
const END_MS: u64 = 130_000;
const HANDSHAKE_STEP_MS: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Timer,
    Refused,
    Opened,
    Welcome,
    Lost,
    Pong(u64),
}

struct Crowd {
    t0: Instant,
    clients: Vec<Connection>,
    /// (time ms, sequence, client, what)
    queue: BinaryHeap<Reverse<(u64, u64, usize, Kind)>>,
    seq: u64,
    /// Attempt start times (ms) and reconnect times (ms), per client.
    attempts: Vec<u64>,
    reconnected_at: Vec<Option<u64>>,
    max_failures: u32,
    breaker_opened: usize,
    gave_up: usize,
}

impl Crowd {
    fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // the one clock read: the simulation's origin
        let t0 = Instant::now();
        let clients = (0..CLIENTS)
            .map(|i| Connection::new(&Config::new(0xC0FFEE ^ (i as u64) << 8), t0))
            .collect();
        Self {
            t0,
            clients,
            queue: BinaryHeap::new(),
            seq: 0,
            attempts: Vec::new(),
            reconnected_at: vec![None; CLIENTS],
            max_failures: 0,
            breaker_opened: 0,
            gave_up: 0,
        }
    }

    fn push(&mut self, at: u64, client: usize, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, client, kind)));
    }

    fn instant(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_millis() as u64
    }

    fn server_up(ms: u64) -> bool {
        !(LOSS_MS..BACK_MS).contains(&ms)
    }

    /// Performs the client's outputs, records its events and arms its timer.
    fn settle(&mut self, now: u64, i: usize) {
        while let Some(out) = self.clients[i].poll_output() {
            match out {
                Output::OpenSocket { .. } => {
                    if Self::server_up(now) {
                        self.push(now + HANDSHAKE_STEP_MS, i, Kind::Opened);
                    } else {
                        self.push(now, i, Kind::Refused);
                    }
                }
                Output::SendHello => self.push(now + HANDSHAKE_STEP_MS, i, Kind::Welcome),
                // The server answers pings at once while it is up.
                Output::Send(protocol::ClientMessage::Ping(p)) if Self::server_up(now) => {
                    self.push(now + 1, i, Kind::Pong(p.id))
                }
                Output::Send(_) | Output::CloseSocket { .. } => {}
            }
        }
        while let Some(ev) = self.clients[i].poll_event() {
            match ev {
                Event::AttemptStarted { .. } if now >= LOSS_MS => self.attempts.push(now),
                Event::Connected { .. } if now >= LOSS_MS => self.reconnected_at[i] = Some(now),
                Event::RetryFailed { failures, .. } => {
                    self.max_failures = self.max_failures.max(failures)
                }
                Event::Breaker(resilience::BreakerTransition::Opened { .. }) => {
                    self.breaker_opened += 1
                }
                Event::GaveUp { .. } => self.gave_up += 1,
                _ => {}
            }
        }
        if let Some(at) = self.clients[i].poll_timeout() {
            let at = self.ms(at).max(now);
            self.push(at, i, Kind::Timer);
        }
    }

    fn run(&mut self) {
        for i in 0..CLIENTS {
            let now = self.instant(0);
            self.clients[i].handle_input(now, Input::Connect);
            self.settle(0, i);
            self.push(LOSS_MS, i, Kind::Lost);
        }
        while let Some(Reverse((at, _, i, kind))) = self.queue.pop() {
            if at > END_MS {
                break;
            }
            let now = self.instant(at);
            let c = &mut self.clients[i];
            match kind {
                Kind::Timer => c.handle_timeout(now),
                Kind::Refused => c.handle_input(
                    now,
                    Input::TransportError {
                        reason: "connection refused".into(),
                    },
                ),
                // A socket opened just before the loss dies with it.
                Kind::Opened | Kind::Welcome if !Self::server_up(at) => c.handle_input(
                    now,
                    Input::TransportError {
                        reason: "connection reset".into(),
                    },
                ),
                Kind::Opened => c.handle_input(now, Input::SocketOpened),
                Kind::Welcome => c.handle_input(
                    now,
                    Input::Frame(ServerMessage::Welcome(Welcome {
                        connection_id: format!("c{i}-{at}"),
                        heartbeat_ms: 30_000,
                        max_message_bytes: 65_536,
                        server_time: Timestamp::from_unix_millis(0),
                        token_expires_at: Timestamp::from_unix_millis(86_400_000),
                    })),
                ),
                Kind::Pong(id) => c.handle_input(
                    now,
                    Input::Frame(ServerMessage::Pong(Pong {
                        id,
                        server_time: Timestamp::from_unix_millis(0),
                    })),
                ),
                // Every client sees its socket drop at the same instant.
                Kind::Lost => c.handle_input(
                    now,
                    Input::Closed {
                        code: CloseCode(1006),
                        reason: String::new(),
                    },
                ),
            }
            self.settle(at, i);
        }
    }
}

/// The most values of sorted `times` inside any window `[t, t + width)`.
fn max_in_window(times: &[u64], width: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= width {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[test]
fn a_thousand_clients_spread_out_and_all_return_within_the_bound() {
    let mut crowd = Crowd::new();
    crowd.run();

    let mut attempts = crowd.attempts.clone();
    attempts.sort_unstable();
    let after_return: Vec<u64> = attempts.iter().copied().filter(|&t| t >= BACK_MS).collect();
    let during_outage = attempts.len() - after_return.len();
    let peak_after = max_in_window(&after_return, 100);
    let peak_all = max_in_window(&attempts, 100);
    let peak_1s = max_in_window(&after_return, 1_000);

    let mut back: Vec<u64> = crowd
        .reconnected_at
        .iter()
        .map(|t| t.expect("every client reconnected") - BACK_MS)
        .collect();
    back.sort_unstable();
    let (p50, p99, max) = (
        percentile(&back, 50),
        percentile(&back, 99),
        *back.last().expect("1000 clients"),
    );

    println!("crowd simulation: {CLIENTS} clients lose the server at t=0, server back at t=10 s");
    println!(
        "  attempts: {} in total, {during_outage} refused during the outage, {} after the server returned",
        attempts.len(),
        after_return.len()
    );
    println!(
        "  busiest 100 ms window after the return: {peak_after} attempts ({:.1} % of the crowd); \
         over the whole outage: {peak_all}; busiest 1 s after the return: {peak_1s}",
        peak_after as f64 * 100.0 / CLIENTS as f64
    );
    println!(
        "  reconnected after the server returned: p50 {p50} ms, p99 {p99} ms, max {max} ms \
         (bound 16 040 ms); all {} back",
        back.len()
    );
    println!(
        "  most failed attempts of one client: {}; breakers opened: {}; gave up: {}",
        crowd.max_failures, crowd.breaker_opened, crowd.gave_up
    );
    // A histogram of attempts per second after the loss, for the closing note.
    let mut per_second = [0usize; 32];
    for &t in &attempts {
        let s = ((t - LOSS_MS) / 1_000) as usize;
        if s < per_second.len() {
            per_second[s] += 1;
        }
    }
    println!("  attempts per second since the loss: {per_second:?}");

    assert_eq!(back.len(), CLIENTS, "every client reconnected");
    assert!(
        max <= 16_000 + 2 * HANDSHAKE_STEP_MS,
        "all back within 16 s of the server's return (took {max} ms)"
    );
    assert!(
        peak_after * 100 <= 5 * CLIENTS,
        "no 100 ms window after the return may hold more than 5 % of the crowd ({peak_after})"
    );
    assert!(
        crowd.max_failures <= 4,
        "at most 4 attempts fail per client"
    );
    assert_eq!(crowd.breaker_opened, 0);
    assert_eq!(crowd.gave_up, 0);
}
