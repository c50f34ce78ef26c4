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

use protocol::{CloseCode, Pong, Reconnect, ReconnectReason, ServerMessage, Timestamp, Welcome};
use resilience::{Config, Connection, Event, Input, Instant, Output};

const CLIENTS: usize = 1_000;
/// The server dies at 60 s (the clients have been connected long enough to count as healthy)…
const LOSS_MS: u64 = 60_000;
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
    /// When the server is back.
    back_ms: u64,
    /// A graceful shutdown: `reconnect` with `after_ms` drawn over this window, then 1012.
    drain_ms: Option<u64>,
    /// While draining, the old server answers the upgrade with 503 and `Retry-After` (whole
    /// seconds until it is back), and the client sees it (native); a browser cannot see the
    /// status and only gets an error.
    retry_after_visible: bool,
    /// The pretend server's RNG for `after_ms` (xorshift; the server's own choice).
    server_rng: u64,
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
    fn new(back_ms: u64, drain_ms: Option<u64>, retry_after_visible: bool) -> Self {
        #[allow(clippy::disallowed_methods)] // the one clock read: the simulation's origin
        let t0 = Instant::now();
        let clients = (0..CLIENTS)
            .map(|i| Connection::new(&Config::new(0xC0FFEE ^ (i as u64) << 8), t0))
            .collect();
        Self {
            back_ms,
            drain_ms,
            retry_after_visible,
            server_rng: 0x9E37_79B9_7F4A_7C15,
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

    fn server_up(&self, ms: u64) -> bool {
        !(LOSS_MS..self.back_ms).contains(&ms)
    }

    fn server_random(&mut self, below: u64) -> u64 {
        let mut x = self.server_rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.server_rng = x;
        x % below
    }

    /// Performs the client's outputs, records its events and arms its timer.
    fn settle(&mut self, now: u64, i: usize) {
        while let Some(out) = self.clients[i].poll_output() {
            match out {
                Output::OpenSocket { .. } => {
                    if self.server_up(now) {
                        self.push(now + HANDSHAKE_STEP_MS, i, Kind::Opened);
                    } else {
                        self.push(now, i, Kind::Refused);
                    }
                }
                Output::SendHello => self.push(now + HANDSHAKE_STEP_MS, i, Kind::Welcome),
                // The server answers pings at once while it is up.
                Output::Send(protocol::ClientMessage::Ping(p)) if self.server_up(now) => {
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
            let up = self.server_up(at);
            let c = &mut self.clients[i];
            match kind {
                Kind::Timer => c.handle_timeout(now),
                Kind::Refused if self.drain_ms.is_some() && self.retry_after_visible => {
                    let secs = (self.back_ms - at).div_ceil(1_000).max(1);
                    c.handle_input(
                        now,
                        Input::Refused {
                            status: 503,
                            retry_after: Some(Duration::from_secs(secs)),
                        },
                    )
                }
                Kind::Refused => c.handle_input(
                    now,
                    Input::TransportError {
                        reason: "connection refused".into(),
                    },
                ),
                // A socket opened just before the loss dies with it.
                Kind::Opened | Kind::Welcome if !up => c.handle_input(
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
                // Every client sees its socket drop at the same instant…
                Kind::Lost => match self.drain_ms {
                    None => c.handle_input(
                        now,
                        Input::Closed {
                            code: CloseCode(1006),
                            reason: String::new(),
                        },
                    ),
                    // …or is told when to come back, then closed with 1012 (CONTRACT §5.6).
                    Some(window) => {
                        let after_ms = self.server_random(window);
                        let c = &mut self.clients[i];
                        c.handle_input(
                            now,
                            Input::Frame(ServerMessage::Reconnect(Reconnect {
                                after_ms,
                                reason: ReconnectReason::Shutdown,
                            })),
                        );
                        c.handle_input(
                            now,
                            Input::Closed {
                                code: CloseCode::SERVICE_RESTART,
                                reason: "shutdown".into(),
                            },
                        );
                    }
                },
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

/// What one simulation measured.
struct Report {
    attempts: usize,
    during_outage: usize,
    peak_after_100ms: usize,
    peak_all_100ms: usize,
    peak_after_1s: usize,
    p50: u64,
    p99: u64,
    max: u64,
    back: usize,
    max_failures: u32,
    breakers: usize,
    gave_up: usize,
}

fn simulate(title: &str, back_ms: u64, drain_ms: Option<u64>, retry_after_visible: bool) -> Report {
    let mut crowd = Crowd::new(back_ms, drain_ms, retry_after_visible);
    crowd.run();

    let mut attempts = crowd.attempts.clone();
    attempts.sort_unstable();
    let after_return: Vec<u64> = attempts.iter().copied().filter(|&t| t >= back_ms).collect();
    let mut back: Vec<u64> = crowd
        .reconnected_at
        .iter()
        .flatten()
        .map(|&t| t.saturating_sub(back_ms))
        .collect();
    back.sort_unstable();
    let r = Report {
        attempts: attempts.len(),
        during_outage: attempts.len() - after_return.len(),
        peak_after_100ms: max_in_window(&after_return, 100),
        peak_all_100ms: max_in_window(&attempts, 100),
        peak_after_1s: max_in_window(&after_return, 1_000),
        p50: percentile(&back, 50),
        p99: percentile(&back, 99),
        max: back.last().copied().unwrap_or(u64::MAX),
        back: back.len(),
        max_failures: crowd.max_failures,
        breakers: crowd.breaker_opened,
        gave_up: crowd.gave_up,
    };

    println!("{title}");
    println!(
        "  attempts: {} in total, {} refused before the server returned, {} after",
        r.attempts,
        r.during_outage,
        r.attempts - r.during_outage
    );
    println!(
        "  busiest 100 ms window after the return: {} attempts ({:.1} % of the crowd); \
         over the whole run: {}; busiest 1 s after the return: {}",
        r.peak_after_100ms,
        r.peak_after_100ms as f64 * 100.0 / CLIENTS as f64,
        r.peak_all_100ms,
        r.peak_after_1s
    );
    println!(
        "  reconnected, counted from the server's return: p50 {} ms, p99 {} ms, max {} ms; {} of {CLIENTS} back",
        r.p50, r.p99, r.max, r.back
    );
    println!(
        "  most failed attempts of one client: {}; breakers opened: {}; gave up: {}",
        r.max_failures, r.breakers, r.gave_up
    );
    let mut per_second = [0usize; 32];
    for &t in &attempts {
        if let Some(n) = per_second.get_mut(((t - LOSS_MS) / 1_000) as usize) {
            *n += 1;
        }
    }
    println!("  attempts per second since the loss: {per_second:?}");
    r
}

#[test]
fn a_thousand_clients_spread_out_and_all_return_within_the_bound() {
    let r = simulate(
        "crowd simulation: 1000 clients lose the server at once (1006), server back 10 s later",
        LOSS_MS + 10_000,
        None,
        false,
    );
    assert_eq!(r.back, CLIENTS, "every client reconnected");
    assert!(
        r.max <= 16_000 + 2 * HANDSHAKE_STEP_MS,
        "all back within 16 s of the server's return (took {} ms)",
        r.max
    );
    assert!(
        r.peak_after_100ms * 100 <= 5 * CLIENTS,
        "no 100 ms window after the return may hold more than 5 % of the crowd ({})",
        r.peak_after_100ms
    );
    assert!(r.max_failures <= 4, "at most 4 attempts fail per client");
    assert_eq!((r.breakers, r.gave_up), (0, 0));
}

/// A graceful restart (CONTRACT §5.6), one node: the server spreads `after_ms` over its 5 s
/// drain window, closes with 1012, stops admitting (503 with `Retry-After`, whole seconds until
/// it is back) and is back when the window ends. A client waits its `after_ms` plus up to
/// 10 %; an attempt that meets the draining server counts as failed and waits
/// `max(backoff, Retry-After + up to 1 s)` (the extra second undoes the rounding of
/// `Retry-After` to whole seconds, which would otherwise bring everyone refused within the same
/// second back in the same instant). Retry-After ends at most 1 s past the return, plus at most
/// 1 s of spread: all back within 2 s of the return, each with at most one failure. The ~950
/// refused clients land at (a uniform rounding remainder) + (a uniform spread), a triangle
/// over 2 s whose peak density is 1/s: about 95 clients (9.5 %) in the busiest 100 ms, so no
/// window may hold over 12 %. (A wider spread would flatten it at the cost of a later return.)
#[test]
fn a_graceful_restart_with_retry_after_brings_everyone_back_within_two_seconds() {
    let r = simulate(
        "crowd simulation (native): `reconnect` over a 5 s drain, 1012, 503 + Retry-After while draining, back after 5 s",
        LOSS_MS + 5_000,
        Some(5_000),
        true,
    );
    assert_eq!(r.back, CLIENTS);
    assert!(r.max <= 2_000 + 2 * HANDSHAKE_STEP_MS, "took {} ms", r.max);
    assert!(r.max_failures <= 1, "{} failures", r.max_failures);
    assert!(
        r.peak_after_100ms * 100 <= 12 * CLIENTS,
        "peak {} per 100 ms",
        r.peak_after_100ms
    );
    assert_eq!((r.breakers, r.gave_up), (0, 0));
}

/// The same restart seen from a browser, which cannot read the 503 or its `Retry-After`: an
/// early advised attempt is refused and backs off 0.5–1 s, 1–2 s, 2–4 s, … Up to four
/// attempts fit before 5 s (advice ≥ 0, then +0.5, +1.5, +3.5 s at the earliest), so the worst
/// case is a fourth failure just before the return and a fifth retry at most 8 s later: all
/// back within 8 s of the return. The advice keeps them spread: no 100 ms window after the
/// return holds more than 10 % of the crowd.
#[test]
fn a_graceful_restart_seen_from_browsers_is_bounded_by_the_backoff() {
    let r = simulate(
        "crowd simulation (browser): `reconnect` over a 5 s drain, 1012, refusals while draining, back after 5 s",
        LOSS_MS + 5_000,
        Some(5_000),
        false,
    );
    assert_eq!(r.back, CLIENTS);
    assert!(r.max <= 8_000 + 2 * HANDSHAKE_STEP_MS, "took {} ms", r.max);
    assert!(r.max_failures <= 4, "{} failures", r.max_failures);
    assert!(
        r.peak_after_100ms * 100 <= 10 * CLIENTS,
        "peak {} per 100 ms",
        r.peak_after_100ms
    );
    assert_eq!((r.breakers, r.gave_up), (0, 0));
}
