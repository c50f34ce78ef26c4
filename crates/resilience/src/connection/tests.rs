//! Scripted timelines for [`Connection`] on a virtual clock, and property tests.
use std::fmt::Write as _;

use expect_test::expect;
use proptest::prelude::*;
use protocol::{ErrorFrame, Pong, Reconnect, ReconnectReason, Timestamp};

use super::*;
use crate::BreakerState;

/// A virtual-clock harness: time only moves when the script says so, and every output and
/// event is written to a transcript.
struct Sim {
    c: Connection,
    t0: Instant,
    now: Instant,
    log: String,
    opens: u32,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let t0 = crate::t0();
        Self {
            c: Connection::new(&Config::new(seed), t0),
            t0,
            now: t0,
            log: String::new(),
            opens: 0,
        }
    }

    fn ms(&self, at: Instant) -> u128 {
        at.saturating_duration_since(self.t0).as_millis()
    }

    /// Runs every timer due up to `ms`, then moves the clock there.
    fn run_until(&mut self, ms: u64) {
        let end = self.t0 + Duration::from_millis(ms);
        while let Some(at) = self.c.poll_timeout() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.c.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(end);
    }

    fn input(&mut self, ms: u64, input: Input) {
        self.run_until(ms);
        self.c.handle_input(self.now, input);
        self.drain();
    }

    /// Runs timers until the next socket is asked for; returns its time in ms.
    fn until_open(&mut self) -> u64 {
        let before = self.opens;
        while self.opens == before {
            let at = self.c.poll_timeout().expect("a timer is armed");
            self.run_until(self.ms(at) as u64);
        }
        self.ms(self.now) as u64
    }

    fn drain(&mut self) {
        let t = self.ms(self.now);
        while let Some(o) = self.c.poll_output() {
            if matches!(o, Output::OpenSocket { .. }) {
                self.opens += 1;
            }
            let line = match o {
                Output::OpenSocket { attempt } => format!("> open #{attempt}"),
                Output::SendHello => "> hello".into(),
                Output::Send(ClientMessage::Ping(p)) => format!("> ping {}", p.id),
                Output::Send(m) => format!("> {}", m.kind()),
                Output::CloseSocket { code, reason } => format!("> close {code} {reason:?}"),
            };
            writeln!(self.log, "{t:<7} {line}").unwrap();
        }
        while let Some(e) = self.c.poll_event() {
            let line = match e {
                Event::StateChanged { from, to } => format!("state {from} -> {to}"),
                Event::AttemptScheduled {
                    attempt,
                    delay,
                    cause,
                    ..
                } => format!(
                    "scheduled #{attempt} in {}ms ({cause:?})",
                    delay.as_millis()
                ),
                Event::AttemptStarted { attempt } => format!("started #{attempt}"),
                Event::RetryFailed {
                    attempt,
                    reason,
                    failures,
                    remaining,
                } => format!(
                    "retry_failed #{attempt} {} ({reason}) failures={failures} remaining={remaining}",
                    reason.error_code()
                ),
                Event::GaveUp { failures, reason } => {
                    format!("gave_up failures={failures} ({reason})")
                }
                Event::Connected {
                    attempt,
                    connection_id,
                    heartbeat,
                    ..
                } => format!(
                    "connected #{attempt} {connection_id} heartbeat={}ms",
                    heartbeat.as_millis()
                ),
                Event::ConnectionLost {
                    reason,
                    connected_for,
                } => format!("lost ({reason}) after {}ms", connected_for.as_millis()),
                Event::TokenNeeded => "token_needed".into(),
                Event::Breaker(BreakerTransition::Opened { until }) => {
                    format!("breaker opened until {}", self.ms(until))
                }
                Event::Breaker(BreakerTransition::Closed) => "breaker closed".into(),
                Event::Rtt { rtt } => format!("rtt {}ms", rtt.as_millis()),
                Event::LatencySpike { rtt, .. } => format!("latency_spike {}ms", rtt.as_millis()),
            };
            writeln!(self.log, "{t:<7} {line}").unwrap();
        }
    }

    fn take_log(&mut self) -> String {
        std::mem::take(&mut self.log)
    }
}

fn welcome(id: &str) -> Input {
    Input::Frame(ServerMessage::Welcome(Welcome {
        connection_id: id.into(),
        heartbeat_ms: 30_000,
        max_message_bytes: 65_536,
        server_time: Timestamp::from_unix_millis(0),
        token_expires_at: Timestamp::from_unix_millis(3_600_000),
    }))
}

fn pong(id: u64) -> Input {
    Input::Frame(ServerMessage::Pong(Pong {
        id,
        server_time: Timestamp::from_unix_millis(0),
    }))
}

fn closed(code: u16) -> Input {
    Input::Closed {
        code: CloseCode(code),
        reason: String::new(),
    }
}

fn refused() -> Input {
    Input::TransportError {
        reason: "connection refused".into(),
    }
}

#[test]
fn first_connect_loss_and_reconnect() {
    let mut s = Sim::new(1);
    assert_eq!(s.c.state(), ConnectionState::Disconnected);
    s.input(0, Input::Connect);
    s.input(10, Input::SocketOpened);
    s.input(30, welcome("c1"));
    s.input(80, pong(1));
    s.run_until(30_000);
    s.input(30_120, pong(2));
    s.input(45_000, closed(1006));
    let t = s.until_open();
    s.input(t + 5, Input::SocketOpened);
    s.input(t + 300, welcome("c2"));
    expect![[r#"
        0       > open #1
        0       state DISCONNECTED -> CONNECTING
        0       started #1
        10      > hello
        30      > ping 1
        30      state CONNECTING -> CONNECTED
        30      connected #1 c1 heartbeat=30000ms
        80      rtt 50ms
        30030   > ping 2
        30120   rtt 90ms
        45000   lost (closed with 1006) after 44970ms
        45000   state CONNECTED -> RECONNECTING
        45000   scheduled #1 in 701ms (Backoff)
        45701   > open #1
        45701   started #1
        45706   > hello
        46001   > ping 3
        46001   state RECONNECTING -> CONNECTED
        46001   connected #1 c2 heartbeat=30000ms
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.c.connection_id(), Some("c2"));
}

#[test]
fn a_slow_welcome_times_out_after_five_seconds_and_counts() {
    let mut s = Sim::new(2);
    s.input(0, Input::Connect);
    s.input(100, Input::SocketOpened);
    s.run_until(5_000);
    expect![[r#"
        0       > open #1
        0       state DISCONNECTED -> CONNECTING
        0       started #1
        100     > hello
        5000    > close 1000 "connection timeout"
        5000    retry_failed #1 CONNECTION_TIMEOUT (no welcome within the connection timeout) failures=1 remaining=9
        5000    scheduled #2 in 941ms (Backoff)
    "#]]
    .assert_eq(&s.take_log());
    // A welcome for the abandoned socket is ignored.
    s.input(5_001, welcome("late"));
    assert_eq!(s.c.state(), ConnectionState::Connecting);
}

#[test]
fn budget_breaker_and_give_up() {
    // The server refuses every attempt at once: the breaker opens after the fifth failure,
    // each later attempt is a half-open trial 30 s after the last, and the tenth failure
    // gives up.
    let mut s = Sim::new(3);
    s.input(0, Input::Connect);
    s.input(0, refused());
    for _ in 0..9 {
        let t = s.until_open();
        s.input(t, refused());
    }
    assert_eq!(s.c.poll_timeout(), None);
    let log: String = s
        .take_log()
        .lines()
        .filter(|l| !l.contains("> open") && !l.contains("started"))
        .map(|l| format!("{l}\n"))
        .collect();
    expect![[r#"
        0       state DISCONNECTED -> CONNECTING
        0       retry_failed #1 NETWORK_FAILURE (transport failed: connection refused) failures=1 remaining=9
        0       scheduled #2 in 812ms (Backoff)
        812     retry_failed #2 NETWORK_FAILURE (transport failed: connection refused) failures=2 remaining=8
        812     scheduled #3 in 1081ms (Backoff)
        1893    retry_failed #3 NETWORK_FAILURE (transport failed: connection refused) failures=3 remaining=7
        1893    scheduled #4 in 2645ms (Backoff)
        4538    retry_failed #4 NETWORK_FAILURE (transport failed: connection refused) failures=4 remaining=6
        4538    scheduled #5 in 4334ms (Backoff)
        8872    breaker opened until 38872
        8872    retry_failed #5 NETWORK_FAILURE (transport failed: connection refused) failures=5 remaining=5
        8872    scheduled #6 in 30000ms (Breaker)
        38872   breaker opened until 68872
        38872   retry_failed #6 NETWORK_FAILURE (transport failed: connection refused) failures=6 remaining=4
        38872   scheduled #7 in 30000ms (Breaker)
        68872   breaker opened until 98872
        68872   retry_failed #7 NETWORK_FAILURE (transport failed: connection refused) failures=7 remaining=3
        68872   scheduled #8 in 30000ms (Breaker)
        98872   breaker opened until 128872
        98872   retry_failed #8 NETWORK_FAILURE (transport failed: connection refused) failures=8 remaining=2
        98872   scheduled #9 in 30000ms (Breaker)
        128872  breaker opened until 158872
        128872  retry_failed #9 NETWORK_FAILURE (transport failed: connection refused) failures=9 remaining=1
        128872  scheduled #10 in 30000ms (Breaker)
        158872  breaker opened until 188872
        158872  retry_failed #10 NETWORK_FAILURE (transport failed: connection refused) failures=10 remaining=0
        158872  state CONNECTING -> FAILED
        158872  gave_up failures=10 (transport failed: connection refused)
    "#]]
    .assert_eq(&log);
    assert_eq!(s.c.state(), ConnectionState::Failed);
    assert_eq!(s.c.state().label(), "Offline");
    // Nothing leaves FAILED on its own.
    s.run_until(10_000_000);
    assert_eq!(s.c.state(), ConnectionState::Failed);
    // An explicit retry starts at once, with a full budget and a closed breaker.
    s.input(10_000_000, Input::Retry);
    s.input(10_000_010, welcome("back"));
    assert_eq!(s.c.state(), ConnectionState::Connected);
    assert_eq!(s.c.failures(), 0);
}

#[test]
fn a_successful_half_open_trial_closes_the_breaker_and_refills_the_budget() {
    let mut s = Sim::new(4);
    s.input(0, Input::Connect);
    s.input(0, refused());
    for _ in 0..4 {
        let t = s.until_open();
        s.input(t, refused());
    }
    assert!(matches!(
        s.c.breaker_state(s.now),
        BreakerState::Open { .. }
    ));
    let t = s.until_open();
    s.take_log();
    s.input(t + 20, welcome("c"));
    expect![[r#"
        42755   > ping 1
        42755   breaker closed
        42755   state CONNECTING -> CONNECTED
        42755   connected #6 c heartbeat=30000ms
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.c.failures(), 0);
    assert_eq!(s.c.breaker_state(s.now), BreakerState::Closed);
}

#[test]
fn server_restart_1012_waits_the_advice_and_is_not_a_failure() {
    let mut s = Sim::new(5);
    s.input(0, Input::Connect);
    s.input(10, welcome("c1"));
    s.take_log();
    s.input(
        60_000,
        Input::Frame(ServerMessage::Reconnect(Reconnect {
            after_ms: 3_000,
            reason: ReconnectReason::Shutdown,
        })),
    );
    s.input(60_050, closed(1012));
    // The attempt after the wait fails (server still down): that one counts.
    let t = s.until_open();
    s.input(t + 1, refused());
    expect![[r#"
        30010   > ping 2
        60010   > ping 3
        60050   lost (closed with 1012) after 60040ms
        60050   state CONNECTED -> RECONNECTING
        60050   scheduled #1 in 3060ms (ServerAdvice)
        63110   > open #1
        63110   started #1
        63111   retry_failed #1 NETWORK_FAILURE (transport failed: connection refused) failures=1 remaining=9
        63111   scheduled #2 in 858ms (Backoff)
    "#]]
    .assert_eq(&s.take_log());
}

#[test]
fn rate_limited_4429_waits_retry_after_even_during_an_attempt() {
    let mut s = Sim::new(6);
    s.input(0, Input::Connect);
    s.input(5, Input::SocketOpened);
    s.input(
        8,
        Input::Frame(ServerMessage::Error(ErrorFrame {
            code: ErrorCode::RateLimit,
            message: "slow down".into(),
            channel: None,
            retry_after_ms: Some(10_000),
        })),
    );
    s.input(9, closed(4429));
    expect![[r#"
        0       > open #1
        0       state DISCONNECTED -> CONNECTING
        0       started #1
        5       > hello
        9       scheduled #2 in 10419ms (ServerAdvice)
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.c.failures(), 0, "an advised close is not a failure");
}

#[test]
fn an_upgrade_refused_with_retry_after_counts_and_waits_the_advice() {
    let mut s = Sim::new(17);
    s.input(0, Input::Connect);
    s.input(
        3,
        Input::Refused {
            status: 503,
            retry_after: Some(Duration::from_secs(20)),
        },
    );
    // A Retry-After shorter than the backoff does not shorten it.
    let t = s.until_open();
    s.input(
        t,
        Input::Refused {
            status: 429,
            retry_after: Some(Duration::from_millis(1)),
        },
    );
    expect![[r#"
        0       > open #1
        0       state DISCONNECTED -> CONNECTING
        0       started #1
        3       retry_failed #1 SERVER_ERROR (upgrade refused with HTTP 503) failures=1 remaining=9
        3       scheduled #2 in 21298ms (ServerAdvice)
        21301   > open #2
        21301   started #2
        21301   retry_failed #2 RATE_LIMIT (upgrade refused with HTTP 429) failures=2 remaining=8
        21301   scheduled #3 in 1561ms (Backoff)
    "#]]
    .assert_eq(&s.take_log());
}

#[test]
fn an_advised_close_of_the_half_open_trial_leaves_the_trial_available() {
    let mut s = Sim::new(18);
    s.input(0, Input::Connect);
    s.input(0, refused());
    for _ in 0..4 {
        let t = s.until_open();
        s.input(t, refused());
    }
    // The half-open trial is rate limited by the server: not a failure, not a success.
    let t = s.until_open();
    s.input(
        t + 1,
        Input::Frame(ServerMessage::Error(ErrorFrame {
            code: ErrorCode::RateLimit,
            message: "slow down".into(),
            channel: None,
            retry_after_ms: Some(2_000),
        })),
    );
    s.input(t + 2, closed(4429));
    s.take_log();
    // The next attempt happens after the advice, as the (still single) trial.
    let t2 = s.until_open();
    assert!(t2 >= t + 2 + 2_000 && t2 <= t + 2 + 2_200, "{t} {t2}");
    s.input(t2 + 10, welcome("ok"));
    assert_eq!(s.c.state(), ConnectionState::Connected);
    assert_eq!(s.c.breaker_state(s.now), BreakerState::Closed);

    // Going offline during a trial releases it too.
    let mut s = Sim::new(19);
    s.input(0, Input::Connect);
    s.input(0, refused());
    for _ in 0..4 {
        let t = s.until_open();
        s.input(t, refused());
    }
    let t = s.until_open();
    s.input(t + 1, Input::NetworkOffline);
    assert_eq!(
        s.c.breaker_state(s.now),
        BreakerState::HalfOpen {
            trial_in_flight: false
        }
    );
}

#[test]
fn advised_close_without_advice_falls_back_to_backoff() {
    let mut s = Sim::new(7);
    s.input(0, Input::Connect);
    s.input(10, welcome("c1"));
    s.take_log();
    s.input(20_000, closed(1012));
    assert!(s.take_log().contains("(Backoff)"));
    assert_eq!(s.c.failures(), 0);
}

#[test]
fn auth_failure_without_a_token_fails_and_with_one_retries() {
    let mut s = Sim::new(8);
    s.input(0, Input::Connect);
    s.input(5, Input::SocketOpened);
    s.input(9, closed(4401));
    s.input(50, Input::TokenUnavailable);
    expect![[r#"
        0       > open #1
        0       state DISCONNECTED -> CONNECTING
        0       started #1
        5       > hello
        9       retry_failed #1 AUTH_FAILURE (closed with 4401) failures=1 remaining=9
        9       token_needed
        50      state CONNECTING -> FAILED
        50      gave_up failures=1 (closed with 4401)
    "#]]
    .assert_eq(&s.take_log());

    // A token that expired on a healthy connection: not a failed attempt.
    let mut s = Sim::new(9);
    s.input(0, Input::Connect);
    s.input(10, welcome("c1"));
    s.take_log();
    s.input(20_000, closed(4401));
    s.input(20_200, Input::TokenAvailable);
    expect![[r#"
        20000   lost (closed with 4401) after 19990ms
        20000   state CONNECTED -> RECONNECTING
        20000   token_needed
        20200   scheduled #1 in 557ms (Backoff)
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.c.failures(), 0);
}

#[test]
fn app_close_disconnects_and_ignores_the_late_close() {
    let mut s = Sim::new(10);
    s.input(0, Input::Connect);
    s.input(10, welcome("c1"));
    s.take_log();
    s.input(1_000, Input::Close);
    s.input(1_010, closed(1000));
    s.run_until(1_000_000);
    s.input(1_000_000, Input::Connect);
    expect![[r#"
        1000    > close 1000 "closed by client"
        1000    state CONNECTED -> DISCONNECTED
        1000000 > open #1
        1000000 state DISCONNECTED -> CONNECTING
        1000000 started #1
    "#]]
    .assert_eq(&s.take_log());
}

#[test]
fn offline_disconnects_and_online_leaves_failed() {
    let mut s = Sim::new(11);
    s.input(0, Input::Connect);
    s.input(10, welcome("c1"));
    s.take_log();
    s.input(1_000, Input::NetworkOffline);
    s.run_until(500_000);
    s.input(500_000, Input::NetworkOnline);
    let t = s.until_open();
    s.input(t + 10, welcome("c2"));
    expect![[r#"
        1000    > close 1000 "network offline"
        1000    state CONNECTED -> DISCONNECTED
        500000  state DISCONNECTED -> RECONNECTING
        500000  scheduled #1 in 678ms (NetworkOnline)
        500678  > open #1
        500678  started #1
        500688  > ping 2
        500688  state RECONNECTING -> CONNECTED
        500688  connected #1 c2 heartbeat=30000ms
    "#]]
    .assert_eq(&s.take_log());

    // FAILED, then the network comes back: trying again with a full budget.
    let mut s = Sim::new(12);
    s.input(0, Input::Connect);
    s.input(0, closed(4401));
    s.input(0, Input::TokenUnavailable);
    assert_eq!(s.c.state(), ConnectionState::Failed);
    s.input(10, Input::NetworkOnline);
    assert_eq!(s.c.state(), ConnectionState::Connecting);
    assert_eq!(s.c.failures(), 0);

    // Connect while offline waits for the network.
    let mut s = Sim::new(13);
    s.input(0, Input::NetworkOffline);
    s.input(1, Input::Connect);
    assert_eq!(s.c.state(), ConnectionState::Disconnected);
    assert_eq!(s.c.poll_timeout(), None);
    s.input(2, Input::NetworkOnline);
    assert_eq!(s.c.state(), ConnectionState::Connecting);
}

#[test]
fn a_dead_link_is_closed_and_reconnected() {
    let mut s = Sim::new(14);
    s.input(0, Input::Connect);
    s.input(10, welcome("c1"));
    s.input(20, pong(1));
    s.take_log();
    // The network silently stops delivering: pings at 30 s and 60 s go unanswered.
    s.run_until(76_000);
    expect![[r#"
        30010   > ping 2
        60010   > ping 3
        75020   > close 1000 "heartbeat timeout"
        75020   lost (no frame for 75000 ms) after 75010ms
        75020   state CONNECTED -> RECONNECTING
        75020   scheduled #1 in 844ms (Backoff)
        75864   > open #1
        75864   started #1
    "#]]
    .assert_eq(&s.take_log());
}

#[test]
fn a_flapping_server_keeps_growing_the_delay() {
    let mut s = Sim::new(15);
    s.input(0, Input::Connect);
    let mut delays = Vec::new();
    let mut t = 0;
    for _ in 0..6 {
        s.input(t + 10, welcome("c"));
        s.take_log();
        // Each connection dies a second after it came up.
        s.input(t + 1_010, closed(1011));
        let log = s.take_log();
        let ms: u64 = log
            .split("scheduled #1 in ")
            .nth(1)
            .and_then(|r| r.split("ms").next())
            .and_then(|n| n.parse().ok())
            .expect("a backoff was scheduled");
        delays.push(ms);
        t = s.until_open();
    }
    expect![[r#"
        [
            897,
            1084,
            2668,
            4008,
            10946,
            15763,
        ]
    "#]]
    .assert_debug_eq(&delays);
    assert_eq!(s.c.failures(), 0, "each welcome refilled the budget");
}

#[test]
fn pings_during_an_attempt_are_not_sent_and_frames_before_connect_are_ignored() {
    let mut s = Sim::new(16);
    s.input(0, welcome("nobody asked"));
    s.input(1, closed(1000));
    s.input(2, Input::SocketOpened);
    assert_eq!(s.c.state(), ConnectionState::Disconnected);
    assert_eq!(s.take_log(), "");
}

#[test]
fn failure_codes_map_to_the_contract() {
    let c = |code| Failure::Closed {
        code: CloseCode(code),
        reason: String::new(),
    };
    assert_eq!(Failure::Timeout.error_code(), ErrorCode::ConnectionTimeout);
    assert_eq!(c(4401).error_code(), ErrorCode::AuthFailure);
    assert_eq!(c(4429).error_code(), ErrorCode::RateLimit);
    assert_eq!(c(1011).error_code(), ErrorCode::ServerError);
    assert_eq!(c(1006).error_code(), ErrorCode::NetworkFailure);
}

#[derive(Clone, Debug)]
enum Step {
    Wait(u64),
    Fire,
    In(Input),
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::Connect),
        Just(Input::SocketOpened),
        Just(welcome("w")),
        (1u64..5).prop_map(pong),
        prop_oneof![
            Just(1000u16),
            Just(1006),
            Just(1011),
            Just(1012),
            Just(4401),
            Just(4408),
            Just(4429)
        ]
        .prop_map(closed),
        Just(refused()),
        (
            prop_oneof![Just(403u16), Just(429), Just(503)],
            proptest::option::of(0u64..60_000)
        )
            .prop_map(|(status, ms)| Input::Refused {
                status,
                retry_after: ms.map(Duration::from_millis)
            }),
        Just(Input::TokenAvailable),
        Just(Input::TokenUnavailable),
        Just(Input::Close),
        Just(Input::NetworkOnline),
        Just(Input::NetworkOffline),
        Just(Input::Retry),
        (0u64..20_000).prop_map(|after_ms| Input::Frame(ServerMessage::Reconnect(Reconnect {
            after_ms,
            reason: ReconnectReason::Shutdown
        }))),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u64..40_000).prop_map(Step::Wait),
        4 => Just(Step::Fire),
        5 => arb_input().prop_map(Step::In),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the driver reports in whatever order: failures never exceed the budget, at
    /// most 10 failures are reported between refills, no attempt starts while the breaker
    /// is open, every attempt is announced by exactly one OpenSocket, the state reported by
    /// events matches `state()`, and the timer never points into the past.
    #[test]
    fn invariants_hold_for_any_script(seed: u64, steps in proptest::collection::vec(arb_step(), 1..150)) {
        let t0 = crate::t0();
        let mut c = Connection::new(&Config::new(seed), t0);
        let mut now = t0;
        let mut failed_since_refill = 0u32;
        let mut open_until: Option<Instant> = None;
        let mut state = c.state();
        for step in steps {
            let refill = matches!(&step, Step::In(Input::Retry | Input::NetworkOnline | Input::Connect));
            match step {
                Step::Wait(ms) => now += Duration::from_millis(ms),
                Step::Fire => {
                    if let Some(at) = c.poll_timeout() {
                        prop_assert!(at >= t0);
                        now = now.max(at);
                    }
                    c.handle_timeout(now);
                }
                Step::In(input) => c.handle_input(now, input),
            }
            if refill && c.failures() == 0 {
                failed_since_refill = 0;
                open_until = None;
            }
            let mut opens = 0;
            while let Some(o) = c.poll_output() {
                if let Output::OpenSocket { .. } = o { opens += 1; }
            }
            let mut starts = 0;
            while let Some(e) = c.poll_event() {
                match e {
                    Event::StateChanged { from, to } => {
                        prop_assert_eq!(from, state);
                        prop_assert_ne!(from, to);
                        state = to;
                    }
                    Event::RetryFailed { failures, .. } => {
                        failed_since_refill += 1;
                        prop_assert!(failures <= 10);
                        prop_assert!(failed_since_refill <= 10);
                    }
                    Event::Connected { .. } => failed_since_refill = 0,
                    Event::Breaker(BreakerTransition::Opened { until }) => open_until = Some(until),
                    Event::Breaker(BreakerTransition::Closed) => open_until = None,
                    Event::AttemptStarted { .. } => {
                        starts += 1;
                        if let Some(until) = open_until {
                            prop_assert!(now >= until, "attempt while the breaker is open");
                        }
                    }
                    Event::GaveUp { .. } => prop_assert_eq!(c.state(), ConnectionState::Failed),
                    _ => {}
                }
            }
            prop_assert_eq!(opens, starts);
            prop_assert!(opens <= 1);
            prop_assert_eq!(state, c.state());
            prop_assert!(c.failures() <= 10);
        }
    }
}
