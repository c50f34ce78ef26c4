//! Connection admission (CONTRACT §4), decided before the WebSocket upgrade, and the guards
//! shared with the `/v1/*` endpoints: the client IP through trusted proxies, the Origin
//! allow-list, the per-IP upgrade token bucket, the transport rule in production, the
//! connection limit and draining, the per-IP concurrent cap, and the cool-down after repeated
//! authentication failures. `/health*` never passes through here.
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;

use crate::abuse::{AbuseLimits, AbuseMonitor, Offence, Verdict};
use crate::config::{Cidr, Config};
use crate::drain::Drain;
use crate::http::error_response;
use crate::ratelimit::{TokenBucket, retry_after_secs};

/// Maps this large are pruned of idle entries, so a scan of many addresses cannot grow them
/// without bound.
const PRUNE_AT: usize = 4_096;
/// What a 503 advises when the server is full or draining.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// Why a request was refused; its [`IntoResponse`] is the contract's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: `Origin` not allowed, or plain transport in production.
    Forbidden(&'static str),
    /// 429 with `Retry-After`.
    TooMany(Duration),
    /// 503 with `Retry-After`.
    Unavailable(Duration),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Forbidden(why) => {
                error_response(StatusCode::FORBIDDEN, ErrorCode::Forbidden, why)
            }
            Self::TooMany(wait) => with_retry_after(
                error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimit,
                    "too many requests",
                ),
                wait,
            ),
            Self::Unavailable(wait) => with_retry_after(
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ServerError,
                    "not accepting connections now",
                ),
                wait,
            ),
        }
    }
}

/// Adds `Retry-After` in whole seconds, rounded up, at least 1.
pub fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let secs = retry_after_secs(wait);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
    );
    response
}

/// Admission state, shared by every request.
#[derive(Debug)]
pub struct Admission {
    config: Arc<Config>,
    drain: Drain,
    // Open WebSocket connections (those holding a [`ConnectionPermit`]).
    open: AtomicUsize,
    // A std mutex: held for a map lookup, never across an await.
    state: Mutex<State>,
    /// Unusual-pattern counts per IP and `sub` (issue 7 §5); `/health` shows them.
    pub abuse: AbuseMonitor,
}

#[derive(Debug, Default)]
struct State {
    upgrades: HashMap<IpAddr, TokenBucket>,
    requests: HashMap<IpAddr, TokenBucket>,
    api_subs: HashMap<String, TokenBucket>,
    per_ip: HashMap<IpAddr, usize>,
    per_sub: HashMap<String, usize>,
    failures: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<Instant>,
    cooldown_until: Option<Instant>,
}

/// Held by a session for its lifetime: counts it against the global and per-IP limits.
#[derive(Debug)]
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        let mut state = self.admission.lock();
        if let Some(n) = state.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Held by an authenticated session: counts it against the per-`sub` cap, when one is set.
#[derive(Debug)]
pub struct SubPermit {
    admission: Option<(Arc<Admission>, String)>,
}

impl Drop for SubPermit {
    fn drop(&mut self) {
        if let Some((admission, sub)) = self.admission.take() {
            let mut state = admission.lock();
            if let Some(n) = state.per_sub.get_mut(&sub) {
                *n -= 1;
                if *n == 0 {
                    state.per_sub.remove(&sub);
                }
            }
        }
    }
}

impl ConnectionPermit {
    /// The client IP this connection counts against.
    #[must_use]
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Admission {
    /// Fresh state.
    #[must_use]
    pub fn new(config: Arc<Config>, drain: Drain) -> Self {
        let limits = &config.limits;
        let abuse = AbuseMonitor::new(AbuseLimits {
            window: limits.auth_failures.window,
            auth_failures: limits.auth_failures.threshold,
            rate_limited: limits.abuse_rate_limited,
            protocol_errors: limits.abuse_protocol_errors,
        });
        Self {
            abuse,
            config,
            drain,
            open: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    /// Open WebSocket connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The client IP of a request (CONTRACT §4).
    #[must_use]
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.config.trusted_proxies)
    }

    /// Decides a `/ws` upgrade. On success the permit counts the connection until dropped.
    pub fn admit_websocket(
        self: &Arc<Self>,
        peer: SocketAddr,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<ConnectionPermit, Refusal> {
        let ip = self.client_ip(peer, headers);
        self.check_cooldown(ip, now)?;
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| self.config.allowed_origins.allows(o));
            if !allowed {
                if let Some(n) = self.abuse.log_sample(ip, "cors_rejected", now) {
                    tracing::warn!(
                        component = "websocket",
                        event = "cors_rejected",
                        origin = %String::from_utf8_lossy(origin.as_bytes()),
                        client_ip = %ip,
                        in_window = n,
                    );
                }
                return Err(Refusal::Forbidden("origin not allowed"));
            }
        }
        {
            let mut state = self.lock();
            let limit = self.config.limits.upgrade;
            prune(&mut state.upgrades, now);
            let bucket = state
                .upgrades
                .entry(ip)
                .or_insert_with(|| TokenBucket::new(limit, now));
            if let Err(wait) = bucket.try_take(now) {
                drop(state);
                crate::metrics::rate_limited();
                if let Some(n) = self.abuse.log_sample(ip, "rate_limited_upgrade", now) {
                    tracing::warn!(
                        component = "websocket",
                        event = "rate_limited",
                        client_ip = %ip,
                        limit = "upgrade",
                        retry_after_ms = crate::ratelimit::retry_after_ms(wait),
                        in_window = n,
                    );
                }
                self.offence(ip, None, Offence::RateLimited, now);
                return Err(Refusal::TooMany(wait));
            }
        }
        self.check_transport(peer, headers, ip)?;
        let refuse = |reason: &'static str| {
            tracing::warn!(
                component = "websocket",
                event = "admission_refused",
                client_ip = %ip,
                reason,
                connections = self.connections(),
            );
            Refusal::Unavailable(UNAVAILABLE_RETRY)
        };
        if self.drain.is_draining() {
            return Err(refuse("draining"));
        }
        let limits = &self.config.limits;
        if self.open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(refuse("connection limit"));
        }
        let mut state = self.lock();
        let count = state.per_ip.entry(ip).or_insert(0);
        if *count >= limits.max_connections_per_ip {
            drop(state);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(refuse("per-ip connection limit"));
        }
        *count += 1;
        Ok(ConnectionPermit {
            admission: self.clone(),
            ip,
        })
    }

    /// Counts an authenticated connection of `sub`; `None` when the per-`sub` cap (if set)
    /// is reached.
    pub fn admit_sub(self: &Arc<Self>, sub: &str) -> Option<SubPermit> {
        let Some(cap) = self.config.limits.max_connections_per_sub else {
            return Some(SubPermit { admission: None });
        };
        let mut state = self.lock();
        let count = state.per_sub.entry(sub.to_owned()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(SubPermit {
            admission: Some((self.clone(), sub.to_owned())),
        })
    }

    /// Guards a `/v1/*` request: cool-down, transport rule and the per-IP request bucket.
    pub fn admit_api(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<IpAddr, Refusal> {
        let ip = self.client_ip(peer, headers);
        self.check_cooldown(ip, now)?;
        self.check_transport(peer, headers, ip)?;
        let mut state = self.lock();
        let limit = self.config.limits.publish;
        prune(&mut state.requests, now);
        let bucket = state
            .requests
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(limit, now));
        if let Err(wait) = bucket.try_take(now) {
            drop(state);
            crate::metrics::rate_limited();
            if let Some(n) = self.abuse.log_sample(ip, "rate_limited_http", now) {
                tracing::warn!(
                    component = "server",
                    event = "rate_limited",
                    client_ip = %ip,
                    limit = "http",
                    retry_after_ms = crate::ratelimit::retry_after_ms(wait),
                    in_window = n,
                );
            }
            self.offence(ip, None, Offence::RateLimited, now);
            return Err(Refusal::TooMany(wait));
        }
        Ok(ip)
    }

    /// The HTTP API rate per token `sub` (issue 7 §3): the same limit as per IP, so one token
    /// spread over many addresses is limited as well.
    pub fn admit_api_sub(&self, ip: IpAddr, sub: &str, now: Instant) -> Result<(), Refusal> {
        let limit = self.config.limits.publish;
        let mut state = self.lock();
        if state.api_subs.len() >= PRUNE_AT {
            state.api_subs.retain(|_, b| !b.is_full(now));
        }
        let bucket = state
            .api_subs
            .entry(sub.to_owned())
            .or_insert_with(|| TokenBucket::new(limit, now));
        let Err(wait) = bucket.try_take(now) else {
            return Ok(());
        };
        drop(state);
        crate::metrics::rate_limited();
        if let Some(n) = self.abuse.log_sample(ip, "rate_limited_token", now) {
            tracing::warn!(
                component = "server",
                event = "rate_limited",
                client_ip = %ip,
                sub,
                limit = "http_token",
                retry_after_ms = crate::ratelimit::retry_after_ms(wait),
                in_window = n,
            );
        }
        self.offence(ip, Some(sub), Offence::RateLimited, now);
        Err(Refusal::TooMany(wait))
    }

    /// Counts an authentication failure from `ip`; at the threshold within the window the IP
    /// gets a cool-down and `suspicious_activity` is logged.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) {
        self.abuse.record(ip, None, Offence::AuthFailure, now);
        self.count_auth_failure(ip, now);
    }

    /// [`Self::auth_failed`] on a connection whose `sub` is known (a failed refresh).
    pub fn auth_failed_for(&self, ip: IpAddr, sub: &str, now: Instant) {
        self.abuse.record(ip, Some(sub), Offence::AuthFailure, now);
        self.count_auth_failure(ip, now);
    }

    /// Counts a rate-limit hit or a protocol error ([`AbuseMonitor::record`]); past its
    /// threshold the IP gets the same cool-down as after repeated authentication failures.
    pub fn offence(&self, ip: IpAddr, sub: Option<&str>, offence: Offence, now: Instant) {
        if self.abuse.record(ip, sub, offence, now) == Verdict::CoolDown {
            let until = now + self.config.limits.auth_failures.cooldown;
            let mut state = self.lock();
            let entry = state.failures.entry(ip).or_default();
            if entry.cooldown_until.is_none_or(|u| u < until) {
                entry.cooldown_until = Some(until);
            }
        }
    }

    fn count_auth_failure(&self, ip: IpAddr, now: Instant) {
        let limit = self.config.limits.auth_failures;
        let mut state = self.lock();
        if state.failures.len() >= PRUNE_AT {
            state.failures.retain(|_, f| {
                f.cooldown_until.is_some_and(|u| u > now)
                    || f.times
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < limit.window)
            });
        }
        let entry = state.failures.entry(ip).or_default();
        while entry
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > limit.window)
        {
            entry.times.pop_front();
        }
        entry.times.push_back(now);
        let in_cooldown = entry.cooldown_until.is_some_and(|u| u > now);
        if entry.times.len() >= limit.threshold as usize && !in_cooldown {
            entry.cooldown_until = Some(now + limit.cooldown);
            let failures = entry.times.len();
            entry.times.clear();
            drop(state);
            tracing::warn!(
                component = "server",
                event = "suspicious_activity",
                client_ip = %ip,
                auth_failures = failures,
                window_ms = u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX),
                cooldown_ms = u64::try_from(limit.cooldown.as_millis()).unwrap_or(u64::MAX),
            );
        }
    }

    fn check_cooldown(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let state = self.lock();
        match state.failures.get(&ip).and_then(|f| f.cooldown_until) {
            Some(until) if until > now => Err(Refusal::TooMany(until - now)),
            _ => Ok(()),
        }
    }

    fn check_transport(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Result<(), Refusal> {
        if !self.config.environment.is_production() || self.is_secure(peer, headers) {
            return Ok(());
        }
        tracing::warn!(
            component = "server",
            event = "insecure_transport_rejected",
            client_ip = %ip,
        );
        Err(Refusal::Forbidden("TLS is required"))
    }

    /// Whether the request arrived over TLS: served directly with TLS, or forwarded by a
    /// trusted proxy with `X-Forwarded-Proto: https`.
    #[must_use]
    pub fn is_secure(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        if self.config.tls.is_some() {
            return true;
        }
        let trusted = &self.config.trusted_proxies;
        if !is_trusted(peer.ip(), trusted) {
            return false;
        }
        headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .next_back()
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("admission lock is never poisoned")
    }
}

fn prune(buckets: &mut HashMap<IpAddr, TokenBucket>, now: Instant) {
    if buckets.len() >= PRUNE_AT {
        buckets.retain(|_, b| !b.is_full(now));
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The TCP peer, or — when the peer is a trusted proxy — the nearest untrusted address in
/// `X-Forwarded-For` (read right to left). Unparsable entries end the walk.
#[must_use]
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let mut ip = canonical(peer.ip());
    if !is_trusted(ip, trusted) {
        return ip;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for hop in hops.iter().rev() {
        let Some(addr) = parse_hop(hop) else { break };
        ip = canonical(addr);
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    ip
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn client_ip_through_trusted_proxies_only() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 192.0.2.7, 10.1.1.1")]);
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger.ip());
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy.ip());
        let garbage = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(client_ip(proxy, &garbage, &trusted), proxy.ip());
    }
}
