//! The dashboard's layout: a header and a grid of cards, each reading the [`Model`].
//!
//! Element ids (and `data-testid`s on repeated rows) are stable: the browser test and anyone
//! scripting the page rely on them (`#status-label`, `#sync-status`, `#channel-input`, …).

mod calls;
mod channel;
mod connection;
mod health;

use leptos::prelude::*;

use crate::model::Model;

/// The whole page.
#[component]
pub fn App(model: Model) -> impl IntoView {
    view! {
        <header class="topbar">
            <div class="brand">
                <span class="logo" aria-hidden="true">"T"</span>
                <div>
                    <h1>"Tether"</h1>
                    <p class="muted small">"Realtime connection dashboard"</p>
                </div>
            </div>
            <connection::HeaderStatus model=model />
        </header>
        <main class="grid">
            <connection::StatusCard model=model />
            <channel::QueueCard model=model />
            <health::HealthCard model=model />
            <channel::ChannelCard model=model />
            <calls::CallsCard model=model />
            <connection::RttCard model=model />
            <connection::MetricsCard model=model />
            <connection::AlertsCard model=model />
            <connection::LogCard model=model />
        </main>
        <footer class="footer muted small">
            "Publisher id "
            <code id="sub-id">{move || model.sub.get()}</code>
            " · kept in this browser so a reload publishes as the same identity."
        </footer>
    }
}

/// A duration in ms as a short human text: `850 ms`, `12 s`, `3 min 4 s`, `2 h 5 min`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// A ratio as a percentage, or a dash before there is anything to divide.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0))
}
