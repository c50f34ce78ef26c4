//! The channel view (subscribe, live messages with offsets, composer) and the outbound queue.

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;

use crate::model::Model;
use crate::ui::human_ms;
use crate::ws_driver::{self, clock};

/// Subscribe form, channel chips, the message list and the composer.
#[component]
pub fn ChannelCard(model: Model) -> impl IntoView {
    let channel_input = NodeRef::<html::Input>::new();
    let composer_input = NodeRef::<html::Input>::new();

    let on_subscribe = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(input) = channel_input.get() else {
            return;
        };
        let name = input.value().trim().to_owned();
        if name.is_empty() {
            model
                .notice
                .set(Some("Type a channel name, e.g. room:1".to_owned()));
            return;
        }
        match ws_driver::subscribe(&name) {
            Ok(()) => {
                model.notice.set(None);
                input.set_value("");
            }
            Err(err) => model
                .notice
                .set(Some(format!("Cannot subscribe to {name:?}: {err}"))),
        }
    };
    let on_publish = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(input) = composer_input.get() else {
            return;
        };
        let text = input.value();
        if text.trim().is_empty() {
            return;
        }
        match ws_driver::publish(&text) {
            Ok(()) => {
                model.notice.set(None);
                input.set_value("");
            }
            Err(err) => model.notice.set(Some(format!("Not sent: {err}"))),
        }
    };

    let current = move || model.current_channel.get();
    let status = move || {
        let current = current();
        model.channels.with(|chs| {
            chs.iter()
                .find(|(c, _)| Some(c) == current.as_ref())
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| "Not subscribed".to_owned())
        })
    };
    let shown = move || {
        let current = current();
        model.messages.with(|all| {
            let mut rows: Vec<_> = all
                .iter()
                .filter(|m| Some(&m.channel) == current.as_ref())
                .cloned()
                .collect();
            rows.reverse(); // newest first
            rows
        })
    };

    view! {
        <section class="card wide" id="channel-card" aria-labelledby="channel-title">
            <h2 id="channel-title">"Channel"</h2>
            <form class="inline-form" on:submit=on_subscribe>
                <label class="sr-only" for="channel-input">"Channel name"</label>
                <input
                    id="channel-input"
                    node_ref=channel_input
                    type="text"
                    placeholder="Channel, e.g. room:1"
                    autocomplete="off"
                    maxlength="128"
                />
                <button id="subscribe-button" class="button" type="submit">"Subscribe"</button>
            </form>
            <div class="chips" id="channel-list">
                <For
                    // The Calls panel owns `calls` and `call:…` (and shows their status).
                    each=move || {
                        let mut chs = model.channels.get();
                        chs.retain(|(c, _)| !crate::calls::is_call_channel(c));
                        chs
                    }
                    key=|(c, s)| (c.clone(), s.clone())
                    children=move |(name, chip_status)| {
                        let select = name.clone();
                        let remove = name.clone();
                        let label = name.clone();
                        let is_current = move || current().as_deref() == Some(name.as_str());
                        view! {
                            <span class=move || if is_current() { "chip chip-current" } else { "chip" }>
                                <button
                                    class="chip-name"
                                    title=chip_status
                                    on:click=move |_| ws_driver::show_channel(&select)
                                >
                                    {label}
                                </button>
                                <button
                                    class="chip-remove"
                                    aria-label="Unsubscribe"
                                    title="Unsubscribe"
                                    on:click=move |_| ws_driver::unsubscribe(&remove)
                                >
                                    "×"
                                </button>
                            </span>
                        }
                    }
                />
            </div>
            <p class="channel-head">
                <strong id="current-channel">
                    {move || current().unwrap_or_else(|| "No channel selected".to_owned())}
                </strong>
                " · "
                <span id="channel-status" class="muted">{status}</span>
            </p>
            <Show
                when=move || !shown().is_empty()
                fallback=move || {
                    view! {
                        <p class="empty" id="messages-empty">
                            {move || if current().is_some() {
                                "No messages yet. Publish one below, or wait for others."
                            } else {
                                "Subscribe to a channel to see its messages live."
                            }}
                        </p>
                    }
                }
            >
                <ul class="messages" id="message-list">
                    <For
                        each=shown
                        key=|m| (m.channel.clone(), m.offset)
                        children=move |m| {
                            view! {
                                <li data-testid="message" data-offset=m.offset.to_string() data-id=m.id.clone()>
                                    <span class="offset" title="Offset in the channel">
                                        {format!("#{}", m.offset)}
                                    </span>
                                    <span class="message-text" data-testid="message-text">{m.text.clone()}</span>
                                    <time class="muted small">{clock(m.published_ms as f64)}</time>
                                </li>
                            }
                        }
                    />
                </ul>
            </Show>
            <form class="inline-form composer" on:submit=on_publish>
                <label class="sr-only" for="composer-input">"Message"</label>
                <input
                    id="composer-input"
                    node_ref=composer_input
                    type="text"
                    placeholder=move || match current() {
                        Some(c) => format!("Message to {c}"),
                        None => "Subscribe to a channel first".to_owned(),
                    }
                    autocomplete="off"
                />
                <button id="publish-button" class="button" type="submit">"Publish"</button>
            </form>
            <p id="notice" class="notice" role="alert">{move || model.notice.get().unwrap_or_default()}</p>
        </section>
    }
}

/// The outbound queue and the sync status line.
#[component]
pub fn QueueCard(model: Model) -> impl IntoView {
    let waiting = move || model.queue.with(Vec::len);
    view! {
        <section class="card" id="queue-card" aria-labelledby="queue-title">
            <h2 id="queue-title">"Outbound queue"</h2>
            <div class=move || if waiting() == 0 { "badge badge-ok" } else { "badge badge-warn" }>
                <span class="dot" aria-hidden="true"></span>
                <span id="sync-status">{move || model.sync_text()}</span>
            </div>
            <Show
                when=move || { waiting() > 0 }
                fallback=|| view! {
                    <p class="empty">"Messages published while offline wait here, kept in this browser, and are sent once the connection is back."</p>
                }
            >
                <ul class="rows" id="queue-list">
                    <For
                        each=move || model.queue.get()
                        key=|q| (q.id.clone(), q.in_flight, q.sends)
                        children=move |q| {
                            let enqueued = q.enqueued_ms as f64;
                            view! {
                                <li data-testid="queued" data-id=q.id.clone()>
                                    <span class=if q.in_flight { "tag tag-warn" } else { "tag tag-down" }>
                                        {if q.in_flight { "sending" } else { "waiting" }}
                                    </span>
                                    <span class="message-text">{q.text.clone()}</span>
                                    <span class="muted small">
                                        {format!("to {}", q.channel)}
                                    </span>
                                    <span class="muted small when">
                                        {move || {
                                            let age = (model.now_ms.get() - enqueued).max(0.0) as u64;
                                            if age < 1000 {
                                                "queued just now".to_owned()
                                            } else {
                                                format!("queued {} ago", human_ms(age - age % 1000))
                                            }
                                        }}
                                    </span>
                                </li>
                            }
                        }
                    />
                </ul>
            </Show>
        </section>
    }
}
