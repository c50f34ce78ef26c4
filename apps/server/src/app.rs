//! [`App`]: the state every request and session shares.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::drain::Drain;
use crate::hub::{ConnKey, Hub};
use crate::latency::LatencyTracker;
use crate::store::StoreHandle;

/// Shared server state, behind an `Arc`.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The durable store.
    pub store: StoreHandle,
    /// JWT verification and signing.
    pub auth: Authenticator,
    /// Fan-out of committed messages.
    pub hub: Hub,
    /// Ping → Pong round trips for `/health`.
    pub latency: LatencyTracker,
    /// Admission control and connection counts.
    pub admission: Arc<Admission>,
    /// Shutdown state and the session tracker.
    pub drain: Drain,
    /// Sessions an operator may shed (`POST /v1/admin/shed`).
    pub shed: crate::admin::Shedder,
    /// What every session's machine needs from the config (built once).
    pub session: Arc<crate::session::Policy>,
    /// When the server started (for `uptime`).
    pub started: Instant,
    /// The Twilio voice gateway (helper `twilio`): calls, agent breaker, counters.
    pub calls: Arc<crate::twilio::Gateway>,
    // Source of [`ConnKey`]s.
    next_key: AtomicU64,
}

impl App {
    /// Assembles the state.
    #[must_use]
    pub fn new(config: Arc<Config>, store: StoreHandle, hub: Hub, drain: Drain) -> Self {
        let auth = Authenticator::new(&config.auth);
        let session = Arc::new(crate::session::Policy::from_config(&config));
        let admission = Arc::new(Admission::new(config.clone(), drain.clone()));
        let calls = Arc::new(crate::twilio::Gateway::new(&config));
        Self {
            config,
            store,
            auth,
            hub,
            latency: LatencyTracker::default(),
            admission,
            drain,
            shed: crate::admin::Shedder::default(),
            session,
            started: Instant::now(),
            calls,
            next_key: AtomicU64::new(1),
        }
    }

    /// A fresh process-local connection key.
    pub fn next_conn_key(&self) -> ConnKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }
}
