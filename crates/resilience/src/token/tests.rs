//! The [`TokenBroker`] table, and a 4401 driven through broker and session together — the
//! same code both drivers run, so both end a failure the same way.
use std::fmt::Write as _;

use protocol::{CloseCode, ConnectionState, ServerMessage, Timestamp, Welcome};

use super::*;
use crate::{Config, Instant, Output, Session};

const WALL: Timestamp = Timestamp::from_unix_millis(1_795_788_000_000);

fn welcome() -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        connection_id: "c1".into(),
        heartbeat_ms: 30_000,
        max_message_bytes: 65_536,
        server_time: WALL,
        token_expires_at: WALL.add_millis(3_600_000),
    })
}

/// A session and a broker, driven as a driver does; the log keeps what matters here.
struct Rig {
    s: Session,
    b: TokenBroker,
    now: Instant,
    log: String,
}

impl Rig {
    fn connected(source: TokenSource) -> Self {
        let now = crate::t0();
        let mut rig = Self {
            s: Session::new(Config::new(3), now, WALL),
            b: TokenBroker::new(source),
            now,
            log: String::new(),
        };
        rig.s.connect(now);
        rig.pump();
        rig.s.handle_input(now, Input::SocketOpened);
        rig.pump();
        rig.fetched(Ok(()));
        rig.s.handle_message(now, welcome());
        rig.pump();
        expect_test::expect![[r#"
            open #1
            fetch
            fetched: hello true refresh false inputs []
        "#]]
        .assert_eq(&std::mem::take(&mut rig.log));
        rig
    }

    /// Drains the session; every event passes the broker, as in both drivers.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(out) = self.s.poll_output() {
                busy = true;
                if out == Output::SendHello {
                    // The driver holds no usable token: hello waits for one.
                    self.b.need_hello();
                }
                if let Output::OpenSocket { attempt } = out {
                    writeln!(self.log, "open #{attempt}").unwrap();
                }
            }
            while let Some(ev) = self.s.poll_event() {
                busy = true;
                if let Some(input) = self.b.on_session_event(&ev) {
                    writeln!(self.log, "broker answers {input:?}").unwrap();
                    self.s.handle_input(self.now, input);
                }
            }
            if !busy {
                break;
            }
        }
        if self.b.poll_fetch() {
            writeln!(self.log, "fetch").unwrap();
        }
    }

    fn fetched(&mut self, result: Result<(), TokenFailure>) {
        let out = self.b.on_fetched(result);
        writeln!(
            self.log,
            "fetched: hello {} refresh {} inputs {:?}",
            out.send_hello, out.send_refresh, out.inputs
        )
        .unwrap();
        for input in out.inputs {
            self.s.handle_input(self.now, input);
        }
        self.pump();
    }

    fn closed_4401(&mut self) {
        self.s.handle_input(
            self.now,
            Input::Closed {
                code: CloseCode::AUTH_FAILED,
                reason: "token expired".into(),
            },
        );
        self.pump();
    }

    /// Runs the clock to the next attempt and opens its socket.
    fn next_attempt(&mut self) {
        let at = self.s.poll_timeout().expect("an attempt is scheduled");
        self.now = at;
        self.s.handle_timeout(at);
        self.pump();
        self.s.handle_input(self.now, Input::SocketOpened);
        self.pump();
    }

    fn end(&mut self) -> String {
        let c = self.s.connection();
        writeln!(
            self.log,
            "end: {} after {} failed attempt(s)",
            self.s.state(),
            c.failures()
        )
        .unwrap();
        std::mem::take(&mut self.log)
    }
}

#[test]
fn after_a_4401_a_new_token_reconnects() {
    let mut r = Rig::connected(TokenSource::Renewable);
    r.closed_4401();
    r.fetched(Ok(()));
    r.next_attempt();
    r.fetched(Ok(()));
    expect_test::expect![[r#"
        fetch
        fetched: hello false refresh false inputs [TokenAvailable]
        open #1
        fetch
        fetched: hello true refresh false inputs []
        end: RECONNECTING after 0 failed attempt(s)
    "#]]
    .assert_eq(&r.end());
}

#[test]
fn after_a_4401_a_denied_token_is_failed_in_every_driver() {
    let mut r = Rig::connected(TokenSource::Renewable);
    r.closed_4401();
    r.fetched(Err(TokenFailure::Denied("logged out".into())));
    expect_test::expect![[r#"
        fetch
        fetched: hello false refresh false inputs [TokenUnavailable]
        end: FAILED after 0 failed attempt(s)
    "#]]
    .assert_eq(&r.end());
    assert_eq!(r.s.state().label(), "Offline");
}

#[test]
fn after_a_4401_a_passing_token_failure_retries_and_counts_each_attempt() {
    let mut r = Rig::connected(TokenSource::Renewable);
    r.closed_4401();
    r.fetched(Err(TokenFailure::Unavailable("503".into())));
    r.next_attempt();
    r.fetched(Err(TokenFailure::Unavailable("503".into())));
    r.next_attempt();
    r.fetched(Err(TokenFailure::Denied("401".into())));
    expect_test::expect![[r#"
        fetch
        fetched: hello false refresh false inputs [TokenAvailable]
        open #1
        fetch
        fetched: hello false refresh false inputs [TransportError { reason: "fetching a token failed: 503" }]
        open #2
        fetch
        fetched: hello false refresh false inputs [TokenUnavailable]
        end: FAILED after 1 failed attempt(s)
    "#]]
    .assert_eq(&r.end());
}

#[test]
fn a_fixed_token_cannot_be_renewed() {
    let mut r = Rig::connected(TokenSource::Fixed);
    r.closed_4401();
    expect_test::expect![[r#"
        broker answers TokenUnavailable
        end: FAILED after 0 failed attempt(s)
    "#]]
    .assert_eq(&r.end());
}

#[test]
fn one_fetch_serves_every_want_and_refresh_failures_change_nothing() {
    let mut b = TokenBroker::new(TokenSource::Renewable);
    let expiring = SessionEvent::TokenExpiring { expires_at: WALL };
    assert_eq!(b.on_session_event(&expiring), None);
    assert!(b.poll_fetch());
    assert!(!b.poll_fetch(), "one fetch at a time");
    b.need_hello();
    assert!(!b.poll_fetch(), "the fetch under way serves hello too");
    let out = b.on_fetched(Ok(()));
    assert_eq!(
        out,
        TokenOutcome {
            send_hello: true,
            send_refresh: true,
            inputs: vec![],
        }
    );
    assert_eq!(b.on_session_event(&expiring), None);
    assert!(b.poll_fetch());
    let out = b.on_fetched(Err(TokenFailure::Unavailable("down".into())));
    assert_eq!(
        out,
        TokenOutcome::default(),
        "the server's 4401 at expiry decides"
    );
    // A withdrawn hello is not served.
    b.need_hello();
    b.cancel_hello();
    assert!(b.poll_fetch());
    assert!(!b.hello_waiting());
    assert_eq!(b.on_fetched(Ok(())), TokenOutcome::default());
    // A fixed source never fetches for a refresh.
    let mut fixed = TokenBroker::new(TokenSource::Fixed);
    assert_eq!(fixed.on_session_event(&expiring), None);
    assert!(!fixed.poll_fetch());
}

#[test]
fn a_denied_token_for_hello_fails_at_once_and_a_passing_one_is_a_failed_attempt() {
    assert_eq!(
        TokenBroker::attempt_failed(&TokenFailure::Denied("x".into())),
        Input::TokenUnavailable
    );
    assert_eq!(
        TokenBroker::attempt_failed(&TokenFailure::Unavailable("x".into())),
        Input::TransportError {
            reason: "fetching a token failed: x".into()
        }
    );
    // While the first attempt waits for hello's token.
    let now = crate::t0();
    let mut s = Session::new(Config::new(1), now, WALL);
    s.connect(now);
    s.handle_input(now, Input::SocketOpened);
    s.handle_input(
        now,
        TokenBroker::attempt_failed(&TokenFailure::Denied("x".into())),
    );
    assert_eq!(s.state(), ConnectionState::Failed);
    let closed =
        std::iter::from_fn(|| s.poll_output()).any(|o| matches!(o, Output::CloseSocket { .. }));
    assert!(closed, "the socket waiting for hello is closed");
}
