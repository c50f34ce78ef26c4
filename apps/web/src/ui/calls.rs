//! The Calls panel: the Twilio gateway's calls (live first) with their state, duration, agent
//! link, resumes and last stats, and the event log of the selected call.
//!
//! Stable hooks for the browser test and scripts: `#calls-card`, `#calls-summary`,
//! `#calls-status`, `#calls-empty`, one `[data-testid="call"]` row per call with `data-sid`,
//! `data-state` (`live` | `stream-dropped` | `ended`), `data-agent` (`up` | `lost`),
//! `data-resumes` and `data-agent-losses`; `#call-detail` (`data-sid`) with
//! `[data-testid="call-event"]` lines carrying `data-event`.

use leptos::prelude::*;

use crate::calls::{AgentLink, CALLS_CHANNEL, CallRow, CallState, duration_text};
use crate::model::Model;
use crate::ws_driver::clock;

/// The calls table and the selected call's event log.
#[component]
pub fn CallsCard(model: Model) -> impl IntoView {
    let status = move || {
        model.channels.with(|chs| {
            chs.iter()
                .find(|(c, _)| c == CALLS_CHANNEL)
                .map_or_else(|| "Not watching".to_owned(), |(_, s)| s.clone())
        })
    };
    let summary = move || {
        model.calls.with(|c| {
            let live = c.live_count();
            let ended = c.rows().len() - live;
            format!("{live} live · {ended} ended")
        })
    };
    let rows = move || model.calls.with(|c| c.rows().to_vec());
    // The selected call, or the first row (the most recent live call) when none is.
    let selected = move || {
        let chosen = model.selected_call.get();
        model.calls.with(|c| {
            chosen
                .and_then(|sid| c.get(&sid).cloned())
                .or_else(|| c.rows().first().cloned())
        })
    };

    view! {
        <section class="card wide" id="calls-card" aria-labelledby="calls-title">
            <h2 id="calls-title">"Calls"</h2>
            <p class="muted small">
                <span id="calls-summary">{summary}</span>
                " · channel calls: "
                <span id="calls-status">{status}</span>
            </p>
            <Show
                when=move || model.calls.with(|c| !c.rows().is_empty())
                fallback=|| view! {
                    <p class="empty" id="calls-empty">
                        "No calls yet. Calls through the Twilio gateway appear here live (try `tether simulate-call`)."
                    </p>
                }
            >
                <ul class="rows" id="call-list">
                    <For
                        each=rows
                        key=|r| format!("{r:?}")
                        children=move |r| view! { <CallLine model=model row=r /> }
                    />
                </ul>
            </Show>
            {move || selected().map(|row| view! { <CallDetail row=row /> })}
        </section>
    }
}

/// One call: sid, state, duration, agent link, resumes, last stats. Clicking selects it.
#[component]
fn CallLine(model: Model, row: CallRow) -> impl IntoView {
    let sid = row.sid.clone();
    let select = sid.clone();
    let ended = row.state == CallState::Ended;
    let started = row.started_ms;
    let fixed = row.duration_ms(0);
    let reported = row.reported_duration_ms.is_some() || row.ended_ms.is_some();
    // A live call's duration ticks with the page's one-second clock.
    let duration = move || {
        if reported {
            duration_text(fixed)
        } else {
            let now = model.now_ms.get() as i64;
            duration_text(u64::try_from(now.saturating_sub(started)).unwrap_or(0))
        }
    };
    let state_tag = match row.state {
        CallState::Live => "tag tag-ok",
        CallState::StreamDropped => "tag tag-warn",
        CallState::Ended => "tag tag-info",
    };
    let agent_tag = match (row.agent, ended) {
        (_, true) => "tag tag-info",
        (AgentLink::Up, false) => "tag tag-ok",
        (AgentLink::Lost, false) => "tag tag-down",
    };
    let state_word = match (&row.end_reason, row.state) {
        (Some(reason), CallState::Ended) => format!("ended · {reason}"),
        (_, state) => state.word().to_owned(),
    };
    let stats = row.stats.as_ref().map_or_else(
        || "no stats yet".to_owned(),
        |s| {
            format!(
                "in {} · out {} · gaps {} · jitter {:.1} ms · buffered {} ms",
                s.frames_in, s.frames_out, s.gaps, s.jitter_ms, s.buffered_ms
            )
        },
    );
    let is_selected = {
        let sid = sid.clone();
        move || model.selected_call.get().as_deref() == Some(sid.as_str())
    };
    view! {
        <li
            data-testid="call"
            data-sid=sid.clone()
            data-state=row.state.attr()
            data-agent=row.agent.word()
            data-resumes=row.resumes.to_string()
            data-agent-losses=row.agent_losses.to_string()
            class=move || if is_selected() { "call call-selected" } else { "call" }
        >
            <button
                class="chip-name"
                title="Show this call's events"
                on:click=move |_| model.selected_call.set(Some(select.clone()))
            >
                <code>{sid.clone()}</code>
            </button>
            <span class=state_tag data-testid="call-state">{state_word}</span>
            <span class="muted small" data-testid="call-duration">{duration}</span>
            <span class=agent_tag data-testid="call-agent">
                {format!("agent {}", row.agent.word())}
            </span>
            <span class="muted small" data-testid="call-resumes">
                {format!("resumes {} · agent lost {}×", row.resumes, row.agent_losses)}
            </span>
            <span class="muted small when" data-testid="call-stats">{stats}</span>
        </li>
    }
}

/// The event log of one call, oldest first.
#[component]
fn CallDetail(row: CallRow) -> impl IntoView {
    let stream = row
        .stream_sid
        .clone()
        .map(|s| format!(" · stream {s}"))
        .unwrap_or_default();
    view! {
        <div id="call-detail" data-sid=row.sid.clone()>
            <h3 class="small">{format!("Events of {}{stream}", row.sid)}</h3>
            <ol class="log" id="call-events">
                {row
                    .events
                    .iter()
                    .map(|e| {
                        let tag = match e.event.as_str() {
                            "agent_lost" | "stream_dropped" => "tag tag-warn",
                            "agent_restored" | "stream_resumed" | "call_started" => "tag tag-ok",
                            _ => "tag tag-info",
                        };
                        view! {
                            <li data-testid="call-event" data-event=e.event.clone()>
                                <time class="muted">{clock(e.at_ms as f64)}</time>
                                <span class=tag>{e.event.clone()}</span>
                                <span>{e.text.clone()}</span>
                            </li>
                        }
                    })
                    .collect_view()}
            </ol>
        </div>
    }
}
