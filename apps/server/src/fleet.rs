//! The fleet as the clients see it (CONTRACT §5.8, issue 13): client `report` frames folded
//! into the `tether_client_*` metrics and into a bounded, in-memory summary per `sub`, served
//! to the operations console by `GET /v1/admin/fleet` ([`endpoint`]).
//!
//! API summary:
//! - [`report`]`(sub, connection_id, client, &Report) -> Result<(), BadReport>`: validates
//!   and folds one report (the session answers a [`BadReport`] with `BAD_REQUEST`).
//! - [`summary`]`(now, limit) -> FleetSummary`: the service totals and the `limit` worst
//!   clients by reported RTT, by reconnections and by downtime.
//!
//! Bounded: at most [`MAX_SUBS`] entries; a report from a new `sub` at the cap evicts the
//! entry heard from longest ago. Reports arrive once a minute per client, so one mutex is
//! plenty (this is not the message path).

pub mod endpoint;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use protocol::Report;
use serde::Serialize;

/// Most `sub`s the summary remembers.
pub const MAX_SUBS: usize = 10_000;
/// Largest RTT or downtime a report may claim (one day): more is a broken or hostile client.
const MAX_REPORTED_MS: f64 = 86_400_000.0;
/// Longest `client` name kept.
const MAX_CLIENT_NAME: usize = 64;

/// A report that cannot be true (negative or absurd figures).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report field {field}: {problem}")]
pub struct BadReport {
    /// The offending field, e.g. `rtt_ms.p95`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// What the summary keeps per `sub`: the latest report of its latest reporting connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientEntry {
    /// The token's subject.
    pub sub: String,
    /// The connection that sent the latest report.
    pub connection_id: String,
    /// The `client` of its `hello`, when given.
    pub client: Option<String>,
    /// Reported RTT, ms.
    pub rtt_last_ms: Option<f64>,
    /// Reported median RTT, ms.
    pub rtt_p50_ms: Option<f64>,
    /// Reported 95th percentile RTT, ms.
    pub rtt_p95_ms: Option<f64>,
    /// Reconnections since the client started.
    pub reconnects: u64,
    /// Failed connection attempts since the client started.
    pub failed_attempts: u64,
    /// Time without a connection, ms.
    pub downtime_ms: u64,
    /// Publishes waiting in the client's queue.
    pub queue: u64,
    /// Acked ÷ sent.
    pub delivery_rate: Option<f64>,
    /// Reports received from this `sub`.
    pub reports: u64,
    /// Seconds since the latest report.
    pub age_s: f64,
    #[serde(skip)]
    last_seen: Option<Instant>,
}

impl ClientEntry {
    fn rtt_rank(&self) -> f64 {
        self.rtt_p95_ms.or(self.rtt_last_ms).unwrap_or(0.0)
    }
}

/// The answer of `GET /v1/admin/fleet`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetSummary {
    /// Open WebSocket connections (this process).
    pub connections: i64,
    /// `tether_publishes_total` by outcome.
    pub publishes: PublishTotals,
    /// `tether_deliveries_total`.
    pub deliveries: u64,
    /// `tether_slow_consumers_total`.
    pub slow_consumers: u64,
    /// `tether_auth_failures_total`.
    pub auth_failures: u64,
    /// `tether_rate_limited_total`.
    pub rate_limited: u64,
    /// The 95th percentile of the latest reported p95 RTTs across clients, ms.
    pub client_rtt_p95_ms: Option<f64>,
    /// Clients in the summary.
    pub clients: usize,
    /// Worst clients by reported RTT (highest first).
    pub worst_rtt: Vec<ClientEntry>,
    /// Worst clients by reconnections.
    pub worst_reconnects: Vec<ClientEntry>,
    /// Worst clients by downtime.
    pub worst_downtime: Vec<ClientEntry>,
}

/// Publish counts by outcome.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PublishTotals {
    /// Stored.
    pub stored: u64,
    /// Recognised repeats.
    pub duplicate: u64,
    /// Refused.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Fleet {
    by_sub: HashMap<String, ClientEntry>,
}

static FLEET: LazyLock<Mutex<Fleet>> = LazyLock::new(Mutex::default);

fn lock() -> std::sync::MutexGuard<'static, Fleet> {
    // A panic while holding it cannot leave an entry half-written in a way that matters.
    FLEET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn check_ms(field: &'static str, v: Option<f64>) -> Result<Option<f64>, BadReport> {
    match v {
        None => Ok(None),
        Some(v) if !v.is_finite() || v < 0.0 => Err(BadReport {
            field,
            problem: "must be a non-negative number",
        }),
        Some(v) if v > MAX_REPORTED_MS => Err(BadReport {
            field,
            problem: "larger than one day",
        }),
        Some(v) => Ok(Some(v)),
    }
}

/// Validates and folds one report from `sub` on `connection_id` (see the module docs).
pub fn report(
    sub: &str,
    connection_id: &str,
    client: Option<&str>,
    r: &Report,
) -> Result<(), BadReport> {
    let folded = lock().fold(Instant::now(), sub, connection_id, client, r)?;
    crate::metrics::client_report(folded.rtt_seconds, folded.new_reconnects);
    Ok(())
}

/// The service totals and the `limit` worst clients of each kind.
#[must_use]
pub fn summary(limit: usize) -> FleetSummary {
    let entries = lock().entries(Instant::now());
    let m = crate::metrics::get();
    let totals = Totals {
        connections: m.connections.get(),
        publishes: PublishTotals {
            stored: m.publishes_stored.get(),
            duplicate: m.publishes_duplicate.get(),
            refused: m.publishes_refused.get(),
        },
        deliveries: m.deliveries.get(),
        slow_consumers: m.slow_consumers.get(),
        auth_failures: m.auth_failures.get(),
        rate_limited: m.rate_limited.get(),
    };
    summarize(&entries, totals, limit)
}

/// What one folded report adds to the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Folded {
    rtt_seconds: Option<f64>,
    new_reconnects: u64,
}

/// The server-wide counters a summary shows.
#[derive(Debug, Clone, Copy)]
struct Totals {
    connections: i64,
    publishes: PublishTotals,
    deliveries: u64,
    slow_consumers: u64,
    auth_failures: u64,
    rate_limited: u64,
}

impl Fleet {
    fn fold(
        &mut self,
        now: Instant,
        sub: &str,
        connection_id: &str,
        client: Option<&str>,
        r: &Report,
    ) -> Result<Folded, BadReport> {
        let rtt = r.rtt_ms.unwrap_or_default();
        let last = check_ms("rtt_ms.last", rtt.last)?;
        let p50 = check_ms("rtt_ms.p50", rtt.p50)?;
        let p95 = check_ms("rtt_ms.p95", rtt.p95)?;
        #[allow(clippy::cast_precision_loss)]
        check_ms("downtime_ms", r.downtime_ms.map(|d| d as f64))?;
        let delivery_rate = match r.delivery_rate {
            Some(d) if !(0.0..=1.0).contains(&d) => {
                return Err(BadReport {
                    field: "delivery_rate",
                    problem: "must be between 0.0 and 1.0",
                });
            }
            d => d,
        };
        if !self.by_sub.contains_key(sub) && self.by_sub.len() >= MAX_SUBS {
            let oldest = self
                .by_sub
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_sub.remove(&k);
            }
        }
        let entry = self
            .by_sub
            .entry(sub.to_owned())
            .or_insert_with(|| ClientEntry {
                sub: sub.to_owned(),
                connection_id: String::new(),
                client: None,
                rtt_last_ms: None,
                rtt_p50_ms: None,
                rtt_p95_ms: None,
                reconnects: 0,
                failed_attempts: 0,
                downtime_ms: 0,
                queue: 0,
                delivery_rate: None,
                reports: 0,
                age_s: 0.0,
                last_seen: None,
            });
        let reconnects = r.reconnects.unwrap_or(entry.reconnects);
        // The count is the client's since it started: a smaller one is a restarted client (a
        // counter reset, as Prometheus treats one), a larger one adds the difference.
        let new_reconnects = if entry.reports == 0 || reconnects < entry.reconnects {
            reconnects
        } else {
            reconnects - entry.reconnects
        };
        entry.connection_id = connection_id.to_owned();
        entry.client = client.map(|c| c.chars().take(MAX_CLIENT_NAME).collect());
        entry.rtt_last_ms = last.or(entry.rtt_last_ms);
        entry.rtt_p50_ms = p50.or(entry.rtt_p50_ms);
        entry.rtt_p95_ms = p95.or(entry.rtt_p95_ms);
        entry.reconnects = reconnects;
        entry.failed_attempts = r.failed_attempts.unwrap_or(entry.failed_attempts);
        entry.downtime_ms = r.downtime_ms.unwrap_or(entry.downtime_ms);
        entry.queue = r.queue.unwrap_or(entry.queue);
        entry.delivery_rate = delivery_rate.or(entry.delivery_rate);
        entry.reports += 1;
        entry.last_seen = Some(now);
        Ok(Folded {
            rtt_seconds: p95.or(last).map(|ms| ms / 1_000.0),
            new_reconnects,
        })
    }

    fn entries(&self, now: Instant) -> Vec<ClientEntry> {
        let mut entries: Vec<ClientEntry> = self.by_sub.values().cloned().collect();
        for e in &mut entries {
            e.age_s = e
                .last_seen
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        }
        entries
    }
}

#[allow(clippy::cast_precision_loss)]
fn summarize(entries: &[ClientEntry], t: Totals, limit: usize) -> FleetSummary {
    let worst = |key: &dyn Fn(&ClientEntry) -> f64| {
        let mut v: Vec<ClientEntry> = entries.iter().filter(|e| key(e) > 0.0).cloned().collect();
        v.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.sub.cmp(&b.sub)));
        v.truncate(limit);
        v
    };
    let mut rtts: Vec<f64> = entries
        .iter()
        .filter_map(|e| e.rtt_p95_ms.or(e.rtt_last_ms))
        .collect();
    rtts.sort_by(f64::total_cmp);
    FleetSummary {
        connections: t.connections,
        publishes: t.publishes,
        deliveries: t.deliveries,
        slow_consumers: t.slow_consumers,
        auth_failures: t.auth_failures,
        rate_limited: t.rate_limited,
        client_rtt_p95_ms: percentile(&rtts, 0.95),
        clients: entries.len(),
        worst_rtt: worst(&ClientEntry::rtt_rank),
        worst_reconnects: worst(&|e| e.reconnects as f64),
        worst_downtime: worst(&|e| e.downtime_ms as f64),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests;
