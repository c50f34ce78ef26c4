//! `tether probe`: a live view of one connection — state, attempt and countdown to the next
//! retry, RTT now/median/p95 with a sparkline, reconnects, queue length, alerts — redrawn in
//! place once a second with plain ANSI escapes, or one JSON line per second with `--json`.
//!
//! Rendering is pure ([`render`], [`json_line`]) so it is tested without a terminal; [`run`]
//! drives a [`Client`] and prints.
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Client, ClientConfig, ClientError, Credentials, Status, SubscriptionItem};

/// What to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// The WebSocket URL.
    pub url: String,
    /// A channel to subscribe to (messages are counted).
    pub channel: Option<String>,
    /// One JSON line per second instead of the live view.
    pub json: bool,
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
}

/// What the probe saw on its channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages received.
    pub received: u64,
    /// The last offset received.
    pub last_offset: Option<u64>,
    /// `recovered: false` notices.
    pub resets: u64,
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `samples`, scaled between their minimum and maximum.
pub fn sparkline(samples: &[Duration]) -> String {
    let (Some(min), Some(max)) = (samples.iter().min(), samples.iter().max()) else {
        return String::new();
    };
    let span = max.saturating_sub(*min).as_secs_f64();
    samples
        .iter()
        .map(|s| {
            if span <= f64::EPSILON {
                return SPARKS[0];
            }
            let x = s.saturating_sub(*min).as_secs_f64() / span;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            // 0..=7 by construction
            let i = (x * 7.0).round() as usize;
            SPARKS[i.min(7)]
        })
        .collect()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".to_owned(), |d| format!("{} ms", d.as_millis()))
}

/// The live view as text lines (no escapes).
pub fn render(
    url: &str,
    status: &Status,
    channel: Option<(&str, &ChannelStats)>,
    now: Instant,
) -> String {
    let mut out = String::new();
    let state = status.state;
    out.push_str(&format!("tether probe  {url}\n"));
    out.push_str(&format!(
        "state       {} ({}){}\n",
        state.label(),
        state.as_str(),
        status
            .connection_id
            .as_deref()
            .map(|c| format!("  connection {c}"))
            .unwrap_or_default()
    ));
    let retry = match status.next_attempt_at {
        Some(at) => format!(
            "  next retry in {:.1} s",
            at.saturating_duration_since(now).as_secs_f64()
        ),
        None => String::new(),
    };
    out.push_str(&format!("attempt     {}{retry}\n", status.attempt));
    out.push_str(&format!(
        "rtt         now {}  median {}  p95 {}  {}\n",
        ms(status.rtt.last),
        ms(status.rtt.median),
        ms(status.rtt.p95),
        sparkline(&status.rtt_history)
    ));
    out.push_str(&format!("reconnects  {}\n", status.reconnects));
    out.push_str(&format!(
        "queue       {}  (sent {}, acked {}, failed {})\n",
        status.queue_length,
        status.quality.sent,
        status.quality.acked,
        status.quality.failed_messages
    ));
    out.push_str(&format!(
        "downtime    {:.1} s total\n",
        status.quality.downtime_total_ms as f64 / 1000.0
    ));
    let alerts: Vec<&str> = status.alerts.iter().map(|a| a.as_str()).collect();
    out.push_str(&format!(
        "alerts      {}\n",
        if alerts.is_empty() {
            "none".to_owned()
        } else {
            alerts.join(", ")
        }
    ));
    if let Some((name, stats)) = channel {
        out.push_str(&format!(
            "channel     {name}: {} received, last offset {}, {} resets\n",
            stats.received,
            stats.last_offset.map_or("–".to_owned(), |o| o.to_string()),
            stats.resets
        ));
    }
    out
}

/// One `--json` line.
pub fn json_line(status: &Status, channel: Option<(&str, &ChannelStats)>, now: Instant) -> String {
    let millis = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut line = json!({
        "state": status.state.as_str(),
        "label": status.state.label(),
        "connection_id": status.connection_id,
        "attempt": status.attempt,
        "next_retry_ms": millis(status.next_attempt_at.map(|at| at.saturating_duration_since(now))),
        "rtt_ms": millis(status.rtt.last),
        "rtt_median_ms": millis(status.rtt.median),
        "rtt_p95_ms": millis(status.rtt.p95),
        "reconnects": status.reconnects,
        "queue_length": status.queue_length,
        "downtime_total_ms": status.quality.downtime_total_ms,
        "alerts": status.alerts.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
    });
    if let Some((name, stats)) = channel {
        line["channel"] = json!({
            "name": name,
            "received": stats.received,
            "last_offset": stats.last_offset,
            "resets": stats.resets,
        });
    }
    line.to_string()
}

/// Runs the probe, printing to `out` once a second until Ctrl-C or `duration`.
pub async fn run(
    options: ProbeOptions,
    credentials: Credentials,
    mut out: impl Write,
) -> Result<(), ClientError> {
    let client = Client::connect(ClientConfig::new(options.url.clone()), credentials)?;
    let mut stats = ChannelStats::default();
    let mut subscription = match &options.channel {
        Some(channel) => Some(
            client
                .subscribe(channel)
                .await
                .map_err(|e| ClientError::BadUrl(format!("channel {channel}: {e}")))?,
        ),
        None => None,
    };
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = async {
            match subscription.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => break,
            item = item => match item {
                Some(SubscriptionItem::Message(m)) => {
                    stats.received += 1;
                    stats.last_offset = Some(m.offset);
                }
                Some(SubscriptionItem::Reset { .. }) => stats.resets += 1,
                Some(SubscriptionItem::Ended { .. }) | None => subscription = None,
            },
            _ = tick.tick() => {
                let status = client.status();
                let now = tokio::time::Instant::now().into_std();
                let channel = options.channel.as_deref().map(|c| (c, &stats));
                // A closed stdout (e.g. `| head`) ends the probe.
                let written = if options.json {
                    writeln!(out, "{}", json_line(&status, channel, now))
                } else {
                    // Home, clear to the end of the screen, draw.
                    write!(out, "\x1b[H\x1b[J{}", render(&options.url, &status, channel, now))
                };
                if written.and_then(|()| out.flush()).is_err() {
                    break;
                }
                if options.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
        }
    }
    client.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_between_min_and_max() {
        let s: Vec<Duration> = [10, 20, 30, 80]
            .iter()
            .map(|&m| Duration::from_millis(m))
            .collect();
        assert_eq!(sparkline(&s), "▁▂▃█");
        assert_eq!(sparkline(&[Duration::from_millis(5); 3]), "▁▁▁");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn renders_the_view_and_the_json_line() {
        let now = Instant::now();
        let mut status = crate::driver::initial_status();
        status.state = protocol::ConnectionState::Reconnecting;
        status.attempt = 3;
        status.next_attempt_at = Some(now + Duration::from_millis(2500));
        status.reconnects = 2;
        status.rtt.last = Some(Duration::from_millis(12));
        status.rtt_history = vec![Duration::from_millis(10), Duration::from_millis(12)];
        status.alerts = vec![resilience::alerts::AlertKind::ReconnectAttempts];
        let stats = ChannelStats {
            received: 4,
            last_offset: Some(9),
            resets: 0,
        };
        let view = render("ws://x/ws", &status, Some(("room:1", &stats)), now);
        assert!(view.contains("Reconnecting... (RECONNECTING)"), "{view}");
        assert!(
            view.contains("attempt     3  next retry in 2.5 s"),
            "{view}"
        );
        assert!(view.contains("now 12 ms"), "{view}");
        assert!(view.contains("reconnect_attempts"), "{view}");
        assert!(view.contains("room:1: 4 received, last offset 9"), "{view}");
        let line: serde_json::Value =
            serde_json::from_str(&json_line(&status, Some(("room:1", &stats)), now)).unwrap();
        assert_eq!(line["state"], "RECONNECTING");
        assert_eq!(line["next_retry_ms"], 2500);
        assert_eq!(line["reconnects"], 2);
        assert_eq!(line["channel"]["received"], 4);
    }
}
