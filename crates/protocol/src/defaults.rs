//! The defaults of the original rules and of CONTRACT §§4–8, shared by server and clients.
//!
//! Durations are milliseconds, as on the wire.

/// `initialRetryDelay`: the first backoff delay.
pub const INITIAL_RETRY_DELAY_MS: u64 = 1_000;
/// `maxRetryDelay`: the backoff cap.
pub const MAX_RETRY_DELAY_MS: u64 = 30_000;
/// `maxRetryAttempts`: failed attempts before `FAILED`.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// `connectionTimeout`: for the socket to open and `welcome` to arrive; also the server's
/// deadline for the client's `hello`.
pub const CONNECTION_TIMEOUT_MS: u64 = 5_000;
/// `heartbeatInterval`: client pings and server WebSocket pings.
pub const HEARTBEAT_INTERVAL_MS: u64 = 30_000;
/// `latencyThreshold`: an RTT above this is a latency spike; `/health` turns `degraded`.
pub const LATENCY_THRESHOLD_MS: u64 = 200;
/// The server closes a connection silent for this many heartbeat intervals (2.5).
pub const DEAD_LINK_HEARTBEATS_NUM: u64 = 5;
/// Denominator of the dead-link factor (5 / 2 = 2.5 heartbeats).
pub const DEAD_LINK_HEARTBEATS_DEN: u64 = 2;
/// One message limit for WebSocket messages and HTTP publish bodies.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bounded offline queue of outgoing publishes.
pub const OFFLINE_QUEUE_CAPACITY: usize = 1_000;
/// Deduplication window for publish ids (24 h).
pub const DEDUP_WINDOW_MS: u64 = 24 * 60 * 60 * 1_000;
/// Circuit breaker: failures that open it…
pub const BREAKER_FAILURE_THRESHOLD: u32 = 5;
/// …within this window.
pub const BREAKER_WINDOW_MS: u64 = 60_000;
/// Circuit breaker: time from opening to half-open.
pub const BREAKER_OPEN_MS: u64 = 30_000;
/// Alert: more than this many reconnection attempts.
pub const ALERT_RECONNECT_ATTEMPTS: u32 = 3;
/// Alert: more than this many failed messages.
pub const ALERT_FAILED_MESSAGES: u32 = 5;
/// Alert: downtime over this.
pub const ALERT_DOWNTIME_MS: u64 = 30_000;
/// Clients log `connection_quality` this often (CONTRACT §7).
pub const QUALITY_INTERVAL_MS: u64 = 60_000;
/// The server announces `token_expiring` this long before `exp`.
pub const TOKEN_EXPIRING_LEAD_MS: u64 = 60_000;
/// Retention per channel: newest messages kept.
pub const RETENTION_MESSAGES: u64 = 10_000;
/// Retention per channel: maximum age (24 h).
pub const RETENTION_MAX_AGE_MS: u64 = 24 * 60 * 60 * 1_000;
/// History endpoint: default page size.
pub const HISTORY_DEFAULT_LIMIT: u32 = 100;
/// History endpoint: largest page size.
pub const HISTORY_MAX_LIMIT: u32 = 1_000;
/// JWT `exp`/`nbf` leeway, seconds (at most 5).
pub const JWT_LEEWAY_SECS: u64 = 5;
/// Longest publish id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest token accepted in `hello`/`refresh`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `client` string in `hello`, in bytes.
pub const MAX_CLIENT_NAME_BYTES: usize = 256;
/// Longest epoch string, in bytes.
pub const MAX_EPOCH_BYTES: usize = 128;
/// Deepest JSON nesting accepted in a frame (serde_json's own guard is 128).
pub const MAX_JSON_DEPTH: usize = 64;
