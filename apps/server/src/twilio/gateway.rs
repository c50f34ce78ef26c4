//! [`Gateway`]: what every Twilio request and call shares — the settings and public URLs, the
//! signature validator, the agent's circuit breaker (one across all calls), the registry of
//! calls running in this process, and the counters `/metrics` can expose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use resilience::{Breaker, BreakerConfig, BreakerState};
use tokio::sync::mpsc;

use super::call::Attach;
use super::signature::Validator;
use super::twiml::PublicUrls;
use crate::config::{CallSettings, Config, TwilioConfig};

/// The Twilio side when the four settings are present.
#[derive(Debug)]
pub struct Enabled {
    /// The four settings.
    pub config: TwilioConfig,
    /// URLs derived from `PUBLIC_URL`.
    pub urls: PublicUrls,
    /// Checks `X-Twilio-Signature`.
    pub validator: Validator,
}

/// Counters for `/metrics` (`tether_calls_active`, `tether_call_resumes_total`,
/// `tether_agent_link_failures_total`) and the bench.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls running in this process now.
    pub calls_active: AtomicU64,
    /// Calls started since the process started.
    pub calls_started: AtomicU64,
    /// Streams re-established (`/twilio/voice/after` answered with a new `<Connect>`).
    pub call_resumes_total: AtomicU64,
    /// Failed agent link attempts.
    pub agent_link_failures_total: AtomicU64,
}

/// The gateway's shared state (present, with `enabled: None`, when Twilio is off).
#[derive(Debug)]
pub struct Gateway {
    /// `None`: the endpoints answer 404.
    pub enabled: Option<Enabled>,
    /// `TETHER_AGENT_URL`, `TETHER_CALL_RESUMES`, `TETHER_CALL_BUFFER_MS`.
    pub calls: CallSettings,
    /// The agent's breaker, shared by every call's link (a sync lock: never held across an
    /// await, only for one machine call).
    pub breaker: Mutex<Breaker>,
    /// Calls running here, by `CallSid`: where a new stream of a call is handed over.
    registry: Mutex<HashMap<String, mpsc::Sender<Attach>>>,
    /// Counters.
    pub counters: Counters,
}

impl Gateway {
    /// From the validated configuration.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let enabled = config.twilio.clone().map(|t| Enabled {
            urls: PublicUrls::new(&t.public_url),
            validator: Validator::new(t.auth_token.expose()),
            config: t,
        });
        Self {
            enabled,
            calls: config.calls.clone(),
            breaker: Mutex::new(Breaker::new(BreakerConfig::default())),
            registry: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    /// Runs `f` on the breaker.
    pub fn with_breaker<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut guard = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Whether the agent breaker is open now (new calls get the fallback TwiML).
    #[must_use]
    pub fn agent_open(&self, now: Instant) -> bool {
        self.with_breaker(|b| matches!(b.state(now), BreakerState::Open { .. }))
    }

    /// `checks.agent` for `/health`: the breaker as a circuit (open: degraded).
    #[must_use]
    pub fn health_check(&self, now: Instant) -> health::Check {
        let state = self.with_breaker(|b| match b.state(now) {
            BreakerState::Closed => health::CircuitState::Closed,
            BreakerState::HalfOpen { .. } => health::CircuitState::HalfOpen,
            BreakerState::Open { .. } => health::CircuitState::Open,
        });
        health::Check::from(state)
    }

    /// The handle of a call running here.
    #[must_use]
    pub fn live(&self, call_sid: &str) -> Option<mpsc::Sender<Attach>> {
        self.lock_registry()
            .get(call_sid)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    /// Registers a call task's handle (replacing a finished one).
    pub fn register(&self, call_sid: &str, tx: mpsc::Sender<Attach>) {
        self.lock_registry().insert(call_sid.to_owned(), tx);
        self.counters.calls_active.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets a call whose task ended.
    pub fn unregister(&self, call_sid: &str) {
        self.lock_registry().remove(call_sid);
        self.counters.calls_active.fetch_sub(1, Ordering::Relaxed);
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Attach>>> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
