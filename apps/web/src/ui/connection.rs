//! Connection cards: status badge, RTT chart, quality metrics, alerts and the connection log.

use leptos::prelude::*;
use protocol::ConnectionState;

use crate::model::Model;
use crate::ui::{human_ms, percent};
use crate::ws_driver::{self, clock};

/// CSS modifier of a state (colour), always shown together with the state's label.
fn state_class(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connected => "ok",
        ConnectionState::Connecting | ConnectionState::Reconnecting => "warn",
        ConnectionState::Disconnected | ConnectionState::Failed => "down",
    }
}

/// The compact badge in the header.
#[component]
pub fn HeaderStatus(model: Model) -> impl IntoView {
    let state = move || model.state.get();
    view! {
        <div class=move || format!("pill pill-{}", state_class(state())) aria-hidden="true">
            <span class="dot"></span>
            <span>{move || state().label()}</span>
        </div>
    }
}

/// The connection status: label, attempt, countdown, and the actions.
#[component]
pub fn StatusCard(model: Model) -> impl IntoView {
    let state = move || model.state.get();
    let attempt = move || {
        let n = model.attempt.get();
        if state().is_trying() && n > 0 {
            format!("Attempt {n}")
        } else {
            String::new()
        }
    };
    let countdown = move || match (state().is_trying(), model.next_attempt_ms.get()) {
        (true, Some(at)) => {
            let left = ((at - model.now_ms.get()) / 1000.0).ceil().max(0.0);
            let cause = model.wait_cause.get().unwrap_or("backoff");
            format!("next try in {left:.0} s ({cause})")
        }
        (true, None) => "trying now…".to_owned(),
        _ => String::new(),
    };
    let detail = move || match state() {
        ConnectionState::Connected => model
            .connection_id
            .get()
            .map(|id| format!("Connection {id}"))
            .unwrap_or_default(),
        ConnectionState::Disconnected if !model.online.get() => {
            "The browser reports no network; waiting for it to come back.".to_owned()
        }
        ConnectionState::Disconnected => "Not connected (closed on request).".to_owned(),
        ConnectionState::Failed => {
            "Gave up after the retry budget was spent. Retry to try again.".to_owned()
        }
        ConnectionState::Connecting => "Connecting for the first time.".to_owned(),
        ConnectionState::Reconnecting => {
            "Connection lost; retrying with backoff. Messages are queued meanwhile.".to_owned()
        }
    };
    let wanted = move || !matches!(state(), ConnectionState::Disconnected) || !model.online.get();
    view! {
        <section class="card" id="status-card" aria-labelledby="status-title">
            <h2 id="status-title">"Connection"</h2>
            <div
                class=move || format!("badge badge-{}", state_class(state()))
                data-testid="status-badge"
                data-state=move || state().as_str()
                role="status"
                aria-live="polite"
            >
                <span class="dot" aria-hidden="true"></span>
                <span id="status-label">{move || state().label()}</span>
            </div>
            <p class="status-line">
                <span id="status-attempt">{attempt}</span>
                <span id="status-countdown" class="muted">{countdown}</span>
            </p>
            <p id="status-detail" class="muted small">{detail}</p>
            <div class="actions">
                <button
                    id="retry-button"
                    class="button"
                    disabled=move || state() == ConnectionState::Connected
                    on:click=move |_| ws_driver::retry()
                >
                    "Retry now"
                </button>
                <button
                    id="connect-toggle"
                    class="button secondary"
                    on:click=move |_| {
                        if wanted() { ws_driver::disconnect() } else { ws_driver::connect() }
                    }
                >
                    {move || if wanted() { "Disconnect" } else { "Connect" }}
                </button>
            </div>
        </section>
    }
}

/// RTT now and median, and a live chart of the recent samples with the 200 ms threshold.
#[component]
pub fn RttCard(model: Model) -> impl IntoView {
    const W: f64 = 300.0;
    const H: f64 = 80.0;
    const THRESHOLD: f64 = protocol::defaults::LATENCY_THRESHOLD_MS as f64;
    let scale = move || {
        model
            .rtt
            .with(|s| s.iter().copied().fold(THRESHOLD * 1.25, f64::max))
    };
    let points = move || {
        let top = scale();
        model.rtt.with(|samples| {
            let n = samples.len().max(2) - 1;
            samples
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let x = W * i as f64 / n as f64;
                    let y = H - (v / top * H).min(H);
                    format!("{x:.1},{y:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    let threshold_y = move || H - THRESHOLD / scale() * H;
    // The newest sample, marked so that a single sample is visible too.
    let last_point = move || {
        let top = scale();
        model.rtt.with(|samples| {
            let n = samples.len().max(2) - 1;
            let i = samples.len().saturating_sub(1);
            let v = samples.back().copied().unwrap_or(0.0);
            let x = W * i as f64 / n as f64;
            let y = H - (v / top * H).min(H);
            (format!("{x:.1}"), format!("{y:.1}"))
        })
    };
    let ms = |v: Option<u64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v} ms"));
    view! {
        <section class="card" id="rtt-card" aria-labelledby="rtt-title">
            <h2 id="rtt-title">"Round trip"</h2>
            <div class="figures">
                <div>
                    <span class="figure" id="rtt-now">{move || ms(model.quality.get().rtt_ms)}</span>
                    <span class="muted small">"now"</span>
                </div>
                <div>
                    <span class="figure" id="rtt-median">
                        {move || ms(model.quality.get().rtt_median_ms)}
                    </span>
                    <span class="muted small">"median"</span>
                </div>
            </div>
            <Show
                when=move || model.rtt.with(|s| !s.is_empty())
                fallback=|| view! { <p class="empty">"No samples yet: the first ping answers after connecting."</p> }
            >
                <svg
                    class="chart"
                    viewBox="0 0 300 80"
                    preserveAspectRatio="none"
                    role="img"
                    aria-label="Recent round-trip times"
                >
                    <line
                        class="threshold"
                        x1="0"
                        x2="300"
                        y1=move || format!("{:.1}", threshold_y())
                        y2=move || format!("{:.1}", threshold_y())
                    ></line>
                    <polyline class="series" points=points></polyline>
                    <circle class="last" r="3" cx=move || last_point().0 cy=move || last_point().1></circle>
                </svg>
                <p class="muted small">"Dashed line: the 200 ms latency threshold."</p>
            </Show>
        </section>
    }
}

/// Delivery rate, failed attempts, reconnection success and downtime.
#[component]
pub fn MetricsCard(model: Model) -> impl IntoView {
    let q = move || model.quality.get();
    view! {
        <section class="card" id="metrics-card" aria-labelledby="metrics-title">
            <h2 id="metrics-title">"Quality"</h2>
            <dl class="metrics">
                <div>
                    <dt>"Delivery rate"</dt>
                    <dd id="metric-delivery">
                        {move || format!("{} ({} of {})", percent(q().delivery_rate), q().acked, q().sent)}
                    </dd>
                </div>
                <div>
                    <dt>"Failed attempts"</dt>
                    <dd id="metric-failed-attempts">{move || q().failed_attempts.to_string()}</dd>
                </div>
                <div>
                    <dt>"Reconnection success"</dt>
                    <dd id="metric-reconnect-rate">
                        {move || format!("{} ({} reconnects)", percent(q().reconnection_success_rate), q().reconnects)}
                    </dd>
                </div>
                <div>
                    <dt>"Downtime"</dt>
                    <dd id="metric-downtime">
                        {move || {
                            let q = q();
                            if q.current_downtime_ms > 0 {
                                format!("{} total, {} now", human_ms(q.downtime_total_ms), human_ms(q.current_downtime_ms))
                            } else {
                                format!("{} total", human_ms(q.downtime_total_ms))
                            }
                        }}
                    </dd>
                </div>
                <div>
                    <dt>"Failed messages"</dt>
                    <dd id="metric-failed-messages">{move || q().failed_messages.to_string()}</dd>
                </div>
            </dl>
        </section>
    }
}

/// The alerts of CONTRACT §8 with when each began and ended.
#[component]
pub fn AlertsCard(model: Model) -> impl IntoView {
    let active = move || {
        model
            .alerts
            .with(|a| a.iter().filter(|r| r.ended_ms.is_none()).count())
    };
    view! {
        <section class="card" id="alerts-card" aria-labelledby="alerts-title">
            <h2 id="alerts-title">
                "Alerts "
                <span class=move || { if active() > 0 { "count count-alert" } else { "count" } }>
                    {move || if active() > 0 { format!("{} active", active()) } else { "none active".to_owned() }}
                </span>
            </h2>
            <Show
                when=move || model.alerts.with(|a| !a.is_empty())
                fallback=|| view! {
                    <p class="empty">
                        "No alerts. Raised when latency > 200 ms, > 3 reconnection attempts, "
                        "> 5 failed messages, or downtime > 30 s."
                    </p>
                }
            >
                <ul class="rows" id="alert-list">
                    <For
                        each=move || model.alerts.get()
                        key=|a| (a.key, a.ended_ms.is_some())
                        children=move |a| {
                            let open = a.ended_ms.is_none();
                            let when = match a.ended_ms {
                                None => format!("since {}", clock(a.began_ms)),
                                Some(end) => format!(
                                    "{} – {} ({})",
                                    clock(a.began_ms),
                                    clock(end),
                                    human_ms((end - a.began_ms).max(0.0) as u64)
                                ),
                            };
                            view! {
                                <li class=if open { "alert alert-open" } else { "alert alert-closed" } data-testid="alert">
                                    <span class=if open { "tag tag-down" } else { "tag tag-ok" }>
                                        {if open { "Active" } else { "Resolved" }}
                                    </span>
                                    <strong>{a.title}</strong>
                                    <span class="muted small">{a.detail.clone()}</span>
                                    <span class="muted small when">{when}</span>
                                </li>
                            }
                        }
                    />
                </ul>
            </Show>
        </section>
    }
}

/// State changes, attempts and failures, newest first, in sentences.
#[component]
pub fn LogCard(model: Model) -> impl IntoView {
    view! {
        <section class="card wide" id="log-card" aria-labelledby="log-title">
            <h2 id="log-title">"Connection log"</h2>
            <Show
                when=move || model.log.with(|l| !l.is_empty())
                fallback=|| view! { <p class="empty">"Nothing yet."</p> }
            >
                <ol class="log" id="connection-log">
                    <For
                        each=move || model.log.get()
                        key=|row| row.key
                        children=move |row| {
                            view! {
                                <li class=format!("log-{}", row.level.word()) data-testid="log-row">
                                    <time class="muted">{clock(row.at_ms)}</time>
                                    <span class=format!("tag tag-{}", row.level.word())>{row.level.word()}</span>
                                    <span>{row.text.clone()}</span>
                                </li>
                            }
                        }
                    />
                </ol>
            </Show>
        </section>
    }
}
