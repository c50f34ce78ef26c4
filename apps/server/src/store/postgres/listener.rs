//! `LISTEN tether_events` on a connection of its own, turning each notification into a
//! [`Hint::Notice`] for the sequencer. When the connection is lost (a restart, a network cut,
//! `pg_terminate_backend`) it reconnects with a growing delay, marks itself down meanwhile
//! (`/health` shows it in `checks.store`), and after listening again asks for a catch-up of
//! every tracked channel, since notifications sent while it was away are gone.
//!
//! The payload is `{"c":channel,"e":epoch,"o":last_offset}` — never the message (PostgreSQL
//! caps a payload at 8000 bytes; a channel name is at most 128 characters). Anything else on
//! the channel (another program's `NOTIFY`) is ignored.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sequencer::{Hint, ListenerState};
use super::{NOTIFY_CHANNEL, connect_options};
use crate::store::{PostgresConfig, StoreError};

/// First and largest delay between reconnection attempts.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Notice<'a> {
    c: &'a str,
    e: &'a str,
    o: u64,
}

/// The payload announcing that `channel` is at `last` in `epoch`.
pub(crate) fn encode_notice(channel: &str, epoch: &str, last: u64) -> String {
    serde_json::to_string(&Notice {
        c: channel,
        e: epoch,
        o: last,
    })
    .expect("a struct of strings and an integer always serialises")
}

/// Decodes a payload; `None` for anything that is not ours.
pub(crate) fn decode_notice(payload: &str) -> Option<Hint> {
    if payload.len() > 8_000 {
        return None;
    }
    let n: Notice<'_> = serde_json::from_str(payload).ok()?;
    protocol::ChannelName::parse(n.c).ok()?;
    Some(Hint::Notice {
        channel: Arc::from(n.c),
        epoch: n.e.to_owned(),
        last: n.o,
    })
}

/// The listening connection and how to make it again.
pub(crate) struct Listener {
    /// A pool of one connection, only to (re)connect with the node's options.
    pool: PgPool,
    listener: Option<PgListener>,
    state: Arc<ListenerState>,
}

impl Listener {
    /// Connects and listens; fails when the database does not answer (the start fails then).
    pub(crate) async fn connect(
        pg: &PostgresConfig,
        state: Arc<ListenerState>,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(pg.acquire_timeout)
            .connect_with(connect_options(pg, "listen")?)
            .await?;
        let listener = listen(&pool).await?;
        state.set_up();
        Ok(Self {
            pool,
            listener: Some(listener),
            state,
        })
    }

    /// Forwards notifications until `stop`; reconnects on loss.
    pub(crate) async fn run(mut self, hints: mpsc::Sender<Hint>, stop: CancellationToken) {
        let mut delay = RETRY_FIRST;
        loop {
            let Some(listener) = self.listener.as_mut() else {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                match listen(&self.pool).await {
                    Ok(l) => {
                        self.listener = Some(l);
                        self.state.set_up();
                        delay = RETRY_FIRST;
                        tracing::info!(component = "store", event = "store_listener_reconnected");
                        if hints.send(Hint::CatchUpAll).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        self.state.set_down(format!("notification listener: {e}"));
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
                continue;
            };
            let got = tokio::select! {
                () = stop.cancelled() => break,
                got = listener.try_recv() => got,
            };
            match got {
                Ok(Some(n)) => match decode_notice(n.payload()) {
                    Some(hint) => {
                        if hints.send(hint).await.is_err() {
                            break;
                        }
                    }
                    None => tracing::debug!(
                        component = "store",
                        event = "store_notice_ignored",
                        bytes = n.payload().len(),
                    ),
                },
                Ok(None) | Err(_) => {
                    let why = match got {
                        Err(e) => e.to_string(),
                        _ => "connection lost".to_owned(),
                    };
                    tracing::warn!(component = "store", event = "store_listener_lost", error = %why);
                    self.state.set_down(format!("notification listener: {why}"));
                    // Drop it (and its connection) and make a new one.
                    self.listener = None;
                }
            }
        }
        self.listener = None;
        self.pool.close().await;
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnecting is ours to do, so that a catch-up follows it.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_hostile_payloads_are_ignored() {
        let p = encode_notice("room:1", "abc", 42);
        match decode_notice(&p) {
            Some(Hint::Notice {
                channel,
                epoch,
                last,
            }) => assert_eq!((&*channel, epoch.as_str(), last), ("room:1", "abc", 42)),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "{",
            "null",
            r#"{"c":"room:1","e":"x"}"#,
            r#"{"c":"room:1","e":"x","o":-1}"#,
            r#"{"c":"bad channel!","e":"x","o":1}"#,
            r#"{"c":"","e":"x","o":1}"#,
        ] {
            assert!(decode_notice(bad).is_none(), "{bad:?}");
        }
        let huge = format!(r#"{{"c":"a","e":"{}","o":1}}"#, "x".repeat(9_000));
        assert!(decode_notice(&huge).is_none());
        // A 128-character channel with an epoch stays far below PostgreSQL's 8000-byte cap.
        assert!(encode_notice(&"a".repeat(128), &"e".repeat(32), u64::MAX).len() < 400);
    }
}
