//! The server health card, from the polled `GET /health` (last known data when unreachable).

use leptos::prelude::*;

use crate::model::Model;
use crate::ui::human_ms;
use crate::ws_driver::clock;

/// Status, uptime, connections, latency, version and the dependency checks.
#[component]
pub fn HealthCard(model: Model) -> impl IntoView {
    let h = move || model.health.get();
    // A failed poll shows as such; the last known report stays below, marked with its time.
    let status = move || {
        let view = h();
        if view.error.is_some() {
            return "unreachable".to_owned();
        }
        view.report
            .map(|r| r.status.as_str().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let status_class = move || match status().as_str() {
        "healthy" => "badge badge-ok",
        "degraded" => "badge badge-warn",
        "unhealthy" | "unreachable" => "badge badge-down",
        _ => "badge badge-unknown",
    };
    let freshness = move || {
        let view = h();
        match (&view.error, view.received_ms) {
            (Some(err), Some(at)) => {
                let last = view
                    .report
                    .as_ref()
                    .map_or("unknown", |r| r.status.as_str());
                format!("{err}. Last known ({}): {last}", clock(at))
            }
            (Some(err), None) => err.clone(),
            (None, Some(at)) => {
                let age = (model.now_ms.get() - at).max(0.0) as u64;
                if age < 1000 {
                    "updated just now".to_owned()
                } else {
                    format!("updated {} ago", human_ms(age - age % 1000))
                }
            }
            (None, None) => "waiting for the first answer…".to_owned(),
        }
    };
    view! {
        <section class="card" id="health-card" aria-labelledby="health-title">
            <h2 id="health-title">"Server health"</h2>
            <div class=status_class data-testid="health-status">
                <span class="dot" aria-hidden="true"></span>
                <span id="health-status">{status}</span>
            </div>
            <p
                id="health-freshness"
                class=move || if h().error.is_some() { "small stale" } else { "muted small" }
            >
                {freshness}
            </p>
            <Show when=move || h().report.is_some()>
                <dl class="metrics">
                    <div>
                        <dt>"Uptime"</dt>
                        <dd id="health-uptime">
                            {move || h().report.map(|r| human_ms((r.uptime * 1000.0) as u64)).unwrap_or_default()}
                        </dd>
                    </div>
                    <div>
                        <dt>"Connections"</dt>
                        <dd id="health-connections">
                            {move || h().report.map(|r| r.connections.to_string()).unwrap_or_default()}
                        </dd>
                    </div>
                    <div>
                        <dt>"Latency (median ping)"</dt>
                        <dd id="health-latency">
                            {move || h().report.map(|r| format!("{:.0} ms", r.latency)).unwrap_or_default()}
                        </dd>
                    </div>
                    <div>
                        <dt>"Version"</dt>
                        <dd id="health-version">{move || h().report.map(|r| r.version).unwrap_or_default()}</dd>
                    </div>
                </dl>
                <ul class="checks" id="health-checks">
                    {move || {
                        h().report
                            .map(|r| r.checks)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(name, check)| {
                                let word = check.status.as_str();
                                let cls = match word {
                                    "healthy" => "tag tag-ok",
                                    "degraded" => "tag tag-warn",
                                    _ => "tag tag-down",
                                };
                                let latency = check
                                    .latency_ms
                                    .map(|l| format!("{l:.1} ms"))
                                    .unwrap_or_default();
                                let message = check.message.unwrap_or_default();
                                view! {
                                    <li>
                                        <strong>{name}</strong>
                                        <span class=cls>{word}</span>
                                        <span class="muted small">{latency}</span>
                                        <span class="muted small">{message}</span>
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ul>
            </Show>
        </section>
    }
}
