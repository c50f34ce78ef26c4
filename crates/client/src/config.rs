//! [`ClientConfig`]: the server URL, the resilience numbers and the driver's own buffers.
use std::path::PathBuf;
use std::time::Duration;

/// Everything a [`crate::Client`] needs besides its credentials.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The WebSocket endpoint, e.g. `ws://127.0.0.1:8081/ws`.
    pub url: String,
    /// The CONTRACT §8 numbers and the jitter seed (random by default).
    pub resilience: resilience::Config,
    /// Keep queued publishes in this file across restarts of the client (optional).
    pub outbox: Option<PathBuf>,
    /// The `client` field of `hello`.
    pub client_name: String,
    /// Messages buffered per subscription before the client stops taking them and later
    /// resumes from the last one handed over (the server replays the rest).
    pub subscription_buffer: usize,
    /// Events buffered for [`crate::Client::events`] receivers (slow receivers lag).
    pub event_buffer: usize,
    /// How long writing one frame may block before the socket counts as failed.
    pub send_timeout: Duration,
}

impl ClientConfig {
    /// The CONTRACT §8 defaults for `url`, with a random jitter seed.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            resilience: resilience::Config::new(rand::random()),
            outbox: None,
            client_name: concat!("tether-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            subscription_buffer: 4096,
            event_buffer: 1024,
            send_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the outbox file.
    #[must_use]
    pub fn with_outbox(mut self, path: impl Into<PathBuf>) -> Self {
        self.outbox = Some(path.into());
        self
    }

    /// Sets the jitter seed (for reproducible schedules in tests).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.resilience.seed = seed;
        self
    }
}
