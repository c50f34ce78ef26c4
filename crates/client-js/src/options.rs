//! The client options a JavaScript caller may pass, mapped onto `resilience::Config`.
//!
//! The names are the camelCase ones of CONTRACT §8 (`initialRetryDelay`, …) so that a
//! front-end developer recognises them; every one is optional and every absent one keeps the
//! contract's default. This is the only place the package turns JS numbers into policy
//! settings: the TypeScript driver passes the object through untouched.

use std::time::Duration;

use serde::Deserialize;

/// What `new TetherClient({...})` may override. Durations are milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    /// The server URLs (`ws://`/`wss://`), rotated after a failed attempt (CONTRACT §5.9).
    /// The driver turns `url` into a one-element list; at least one is required.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How often a §5.8 quality report is sent while connected (60000 ms; `0`: never).
    pub report_interval: Option<u64>,
    /// `initialRetryDelay` (1000 ms).
    pub initial_retry_delay: Option<u64>,
    /// `maxRetryDelay` (30000 ms).
    pub max_retry_delay: Option<u64>,
    /// `maxRetryAttempts` (10).
    pub max_retry_attempts: Option<u32>,
    /// `connectionTimeout` (5000 ms).
    pub connection_timeout: Option<u64>,
    /// `heartbeatInterval` until a `welcome` says otherwise (30000 ms).
    pub heartbeat_interval: Option<u64>,
    /// `latencyThreshold` (200 ms).
    pub latency_threshold: Option<u64>,
    /// Failures within the breaker window that open it (5).
    pub breaker_threshold: Option<u32>,
    /// The breaker's sliding window (60000 ms).
    pub breaker_window: Option<u64>,
    /// From opening the breaker to half-open (30000 ms).
    pub breaker_open: Option<u64>,
    /// Offline queue capacity (1000).
    pub queue_capacity: Option<usize>,
    /// How often a quality sample (and a §5.8 report) is taken (60000 ms).
    pub quality_interval: Option<u64>,
    /// Queued publishes older than this expire, reported failed (24 h).
    pub dedup_window: Option<u64>,
}

/// Why the options were refused.
#[derive(Debug, PartialEq, Eq)]
pub struct OptionsError(pub String);

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid TetherClient options: {}", self.0)
    }
}

impl std::error::Error for OptionsError {}

impl Options {
    /// Parses the options object as JSON (the driver sends `JSON.stringify(options)`).
    pub fn parse(json: &str) -> Result<Self, OptionsError> {
        let options: Self = serde_json::from_str(json).map_err(|e| OptionsError(e.to_string()))?;
        options.check()?;
        Ok(options)
    }

    /// The session config: the contract's defaults with these overrides and this jitter seed.
    pub fn to_config(&self, seed: u64) -> resilience::Config {
        let mut c = resilience::Config::new(seed).with_urls(self.urls.iter().cloned());
        if let Some(v) = self.report_interval {
            c.report_interval = (v > 0).then(|| Duration::from_millis(v));
        }
        let ms = Duration::from_millis;
        if let Some(v) = self.initial_retry_delay {
            c.initial_retry_delay = ms(v);
        }
        if let Some(v) = self.max_retry_delay {
            c.max_retry_delay = ms(v);
        }
        if let Some(v) = self.max_retry_attempts {
            c.max_retry_attempts = v;
        }
        if let Some(v) = self.connection_timeout {
            c.connection_timeout = ms(v);
        }
        if let Some(v) = self.heartbeat_interval {
            c.heartbeat_interval = ms(v);
        }
        if let Some(v) = self.latency_threshold {
            c.latency_threshold = ms(v);
        }
        if let Some(v) = self.breaker_threshold {
            c.breaker_threshold = v;
        }
        if let Some(v) = self.breaker_window {
            c.breaker_window = ms(v);
        }
        if let Some(v) = self.breaker_open {
            c.breaker_open = ms(v);
        }
        if let Some(v) = self.queue_capacity {
            c.queue_capacity = v;
        }
        if let Some(v) = self.quality_interval {
            c.quality_interval = ms(v);
        }
        if let Some(v) = self.dedup_window {
            c.dedup_window = ms(v);
        }
        c
    }

    /// Values that would make the machines spin or never act are refused with their name.
    fn check(&self) -> Result<(), OptionsError> {
        if self.urls.is_empty() {
            return Err(OptionsError(
                "url or urls: at least one server URL is needed".to_owned(),
            ));
        }
        for url in &self.urls {
            let rest = url
                .strip_prefix("ws://")
                .or_else(|| url.strip_prefix("wss://"));
            if rest.is_none_or(str::is_empty) {
                return Err(OptionsError(format!(
                    "urls: {url:?} is not a ws:// or wss:// URL"
                )));
            }
        }
        let positive = [
            ("initialRetryDelay", self.initial_retry_delay),
            ("maxRetryDelay", self.max_retry_delay),
            ("connectionTimeout", self.connection_timeout),
            ("heartbeatInterval", self.heartbeat_interval),
            ("breakerWindow", self.breaker_window),
            ("breakerOpen", self.breaker_open),
            ("qualityInterval", self.quality_interval),
            ("dedupWindow", self.dedup_window),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(OptionsError(format!("{name} must be at least 1 ms")));
            }
        }
        if let (Some(initial), Some(max)) = (self.initial_retry_delay, self.max_retry_delay)
            && initial > max
        {
            return Err(OptionsError(
                "initialRetryDelay must not exceed maxRetryDelay".to_owned(),
            ));
        }
        if self.max_retry_attempts == Some(0) {
            return Err(OptionsError(
                "maxRetryAttempts must be at least 1".to_owned(),
            ));
        }
        if self.breaker_threshold == Some(0) {
            return Err(OptionsError(
                "breakerThreshold must be at least 1".to_owned(),
            ));
        }
        if self.queue_capacity == Some(0) {
            return Err(OptionsError("queueCapacity must be at least 1".to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_options_keep_every_contract_default() {
        let o = Options::parse(r#"{"urls":["ws://h/ws"]}"#).expect("only a URL");
        assert_eq!(
            o.to_config(9),
            resilience::Config::new(9).with_urls(["ws://h/ws"])
        );
    }

    #[test]
    fn overrides_map_to_the_session_config() {
        let o = Options::parse(
            r#"{"urls":["ws://a/ws","wss://b/ws"],"reportInterval":0,"initialRetryDelay":50,"maxRetryDelay":200,"maxRetryAttempts":3,
                "connectionTimeout":700,"heartbeatInterval":1000,"queueCapacity":5}"#,
        )
        .expect("valid");
        let c = o.to_config(1);
        assert_eq!(c.urls, ["ws://a/ws", "wss://b/ws"]);
        assert_eq!(c.report_interval, None);
        assert_eq!(c.initial_retry_delay, Duration::from_millis(50));
        assert_eq!(c.max_retry_delay, Duration::from_millis(200));
        assert_eq!(c.max_retry_attempts, 3);
        assert_eq!(c.connection_timeout, Duration::from_millis(700));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(1000));
        assert_eq!(c.queue_capacity, 5);
        assert_eq!(
            c.breaker_threshold,
            resilience::Config::new(1).breaker_threshold
        );
    }

    #[test]
    fn hostile_options_are_refused_with_the_name() {
        for (json, needle) in [
            ("{}", "url or urls"),
            (r#"{"urls":[]}"#, "url or urls"),
            (r#"{"urls":["http://h/ws"]}"#, "http://h/ws"),
            (r#"{"urls":["ws://"]}"#, "ws://"),
            (r#"{"urls":"ws://h/ws"}"#, "expected a sequence"),
            (
                r#"{"urls":["ws://h"],"initialRetryDelay":0}"#,
                "initialRetryDelay",
            ),
            (
                r#"{"urls":["ws://h"],"maxRetryAttempts":0}"#,
                "maxRetryAttempts",
            ),
            (
                r#"{"urls":["ws://h"],"initialRetryDelay":500,"maxRetryDelay":100}"#,
                "initialRetryDelay",
            ),
            (r#"{"initialRetryDelay":-1}"#, "-1"),
            (r#"{"initialRetryDelay":"1s"}"#, "1s"),
            (r#"{"retryDelay":10}"#, "retryDelay"),
            (r#"{"urls":["ws://h"],"queueCapacity":0}"#, "queueCapacity"),
            ("[1,2]", "expected"),
            ("{", "EOF"),
        ] {
            let err = Options::parse(json).expect_err(json);
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }
}
