//! Log installation for `tether`: CONTRACT §7 JSON lines (or a human format), with secrets
//! redacted.
//!
//! API summary:
//! - [`init`]`(LogFormat, LogTarget, Option<&telemetry::Target>) -> Result<LogGuard, LogInitError>`:
//!   installs the global subscriber. `serve` uses [`LogTarget::Stdout`]; other commands
//!   [`LogTarget::Stderr`]. Filter: `RUST_LOG` when set, else `info`. With an OTLP target,
//!   spans are exported too ([`crate::telemetry`]); keep the [`LogGuard`] until exit so
//!   pending spans are flushed.
//! - [`JsonLayer`]: the `tracing_subscriber::Layer` that writes one JSON object per event:
//!   `{"timestamp":"2026-11-27T14:00:00.123Z","level":"warn","component":"websocket",
//!   "event":"auth_failure","data":{..},"connectionId":".."}`.
//!   - `level` lowercase; `component` from the `component` field (default `server`); `event`
//!     from the `event` field (default `log`, with `data.target` = the module);
//!     `connection_id` → top-level `connectionId` (omitted when absent).
//!   - Every other field goes into `data`, numbers and bools typed; the message text goes to
//!     `data.message`. Fields of enclosing spans are included (innermost wins), so
//!     `info_span!("conn", component = "websocket", connection_id = %id)` tags every event
//!     inside it.
//!   - Inside an exported span, `trace_id` and `span_id` (hex) of the innermost span are
//!     top-level keys, after `connectionId` (CONTRACT §11). Span fields named `otel.*` (span
//!     kind, status) are for the exporter and stay out of `data`.
//!   - Any field whose name contains `token`, `secret`, `password` or `authorization` (except
//!     names with `fingerprint` or ending in `expires_at`) is written as `"[redacted]"`.
//! - [`is_secret_field`]: that rule.
//!
//! Usage: `tracing::warn!(component = "websocket", event = "auth_failure",
//! connection_id = %cid, reason = %why);`

use std::io::{IsTerminal as _, Write as _};

use protocol::Timestamp;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// `serve`: stdout (CONTRACT §1).
    Stdout,
    /// Every other command: stderr, keeping stdout for results.
    Stderr,
}

/// Installing the subscriber failed (one was installed already, or the OTLP exporter could
/// not be built).
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct LogInitError(String);

/// Keeps the OTLP pipeline alive; dropping it flushes pending spans (at most 5 s) and stops
/// the exporter. Drop it outside the tokio runtime (after `block_on` returns).
#[must_use = "dropping the guard stops the OTLP export"]
#[derive(Default)]
pub struct LogGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Best effort: a collector that is down must not block the exit.
            let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// Installs the global subscriber: the filter from `RUST_LOG` (else `info`), and JSON lines or
/// the human format on `target`. With `otlp`, spans are also exported over OTLP
/// ([`crate::telemetry::otlp_layer`]). Call it before creating the tokio runtime (the HTTP
/// exporter's blocking client must be built outside it).
pub fn init(
    format: LogFormat,
    target: LogTarget,
    otlp: Option<&crate::telemetry::Target>,
) -> Result<LogGuard, LogInitError> {
    let filter =
        || levels(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => JsonLayer::new(std::io::stdout).boxed(),
        (LogFormat::Json, LogTarget::Stderr) => JsonLayer::new(std::io::stderr).boxed(),
        (LogFormat::Pretty, LogTarget::Stdout) => {
            human_layer(std::io::stdout, std::io::stdout().is_terminal()).boxed()
        }
        (LogFormat::Pretty, LogTarget::Stderr) => {
            human_layer(std::io::stderr, std::io::stderr().is_terminal()).boxed()
        }
    };
    let mut layers = vec![layer.with_filter(filter()).boxed()];
    let mut guard = LogGuard::default();
    if let Some(target) = otlp {
        let (otel, provider) =
            crate::telemetry::otlp_layer(target).map_err(|e| LogInitError(e.to_string()))?;
        layers.push(otel.with_filter(filter()).boxed());
        guard.provider = Some(provider);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| LogInitError(e.to_string()))?;
    Ok(guard)
}

/// `env` without tungstenite's frame dumps, keeping `env`'s most verbose level as the hint.
/// Without the hint the combined filter's level is unknown, `log::max_level()` stays at
/// Trace, and every `log` record of the dependencies (tungstenite's ~21 per publish) is built
/// and then discarded: 13 % of a publish's instructions under callgrind.
pub fn levels(env: EnvFilter) -> impl Filter<Registry> + Send + Sync + 'static {
    let hint = Filter::<Registry>::max_level_hint(&env).unwrap_or(LevelFilter::TRACE);
    env.and(tracing_subscriber::filter::filter_fn(no_frame_dumps).with_max_level_hint(hint))
}

/// False for the `trace` records of tungstenite, which dump whole WebSocket frames — a `hello`'s
/// token among them, in hex — so no `RUST_LOG` can bring a secret into the logs (CONTRACT §7).
#[must_use]
pub fn no_frame_dumps(meta: &tracing::Metadata<'_>) -> bool {
    !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("tungstenite"))
}

/// The human format: one line per event, fields `name=value`, secrets redacted.
fn human_layer<W>(writer: W, ansi: bool) -> impl Layer<Registry> + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() == "message" {
            write!(w, "{value:?}")
        } else if is_secret_field(field.name()) {
            write!(w, "{field}=[redacted]")
        } else {
            write!(w, "{field}={value:?}")
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
        .fmt_fields(fields)
}

/// True for field names that may carry a credential; their values are never written.
#[must_use]
pub fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.contains("fingerprint") || n.ends_with("expires_at") {
        return false;
    }
    ["token", "secret", "password", "authorization"]
        .iter()
        .any(|w| n.contains(w))
}

/// The CONTRACT §7 JSON line writer (see the module docs).
pub struct JsonLayer<W> {
    make_writer: W,
    clock: fn() -> Timestamp,
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Writes lines to `make_writer` (e.g. `std::io::stdout`).
    pub fn new(make_writer: W) -> Self {
        Self {
            make_writer,
            clock: crate::store::now,
        }
    }

    /// Uses `clock` for the `timestamp` (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.clock = clock;
        self
    }
}

/// Ordered fields with replace-on-repeat, so the output follows the call site's order.
#[derive(Debug, Default, Clone)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn set(&mut self, name: &str, value: Value) {
        if name.starts_with("log.") || name.starts_with("otel.") {
            // `log` crate records bridged into tracing carry their origin in these; `target`
            // says the same thing.
            return;
        }
        let value = if is_secret_field(name) {
            Value::String("[redacted]".into())
        } else {
            value
        };
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    fn extend(&mut self, other: &Fields) {
        for (k, v) in &other.0 {
            self.set(k, v.clone());
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.set(field.name(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.set(field.name(), v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.set(field.name(), v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::String(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), Value::String(format!("{value:?}")));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<Fields>() {
                values.record(fields);
            } else {
                let mut fields = Fields::default();
                values.record(&mut fields);
                ext.insert(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<Fields>() {
                    fields.extend(f);
                }
                innermost = Some(span.id());
            }
        }
        event.record(&mut fields);
        // After the extensions above are released: the lookup locks them again.
        let ids = innermost.and_then(|id| crate::telemetry::ids_of(&id));
        let line = render(
            (self.clock)(),
            event.metadata().level(),
            event.metadata().target(),
            fields,
            ids,
        );
        let mut writer = self.make_writer.make_writer_for(event.metadata());
        // A log line that cannot be written has nowhere else to go.
        let _ = writer.write_all(line.as_bytes());
    }
}

fn render(
    now: Timestamp,
    level: &tracing::Level,
    target: &str,
    fields: Fields,
    ids: Option<(String, String)>,
) -> String {
    let mut component = None;
    let mut event = None;
    let mut connection_id = None;
    let mut data = Map::new();
    let mut message = None;
    for (k, v) in fields.0 {
        match k.as_str() {
            "component" => component = Some(v),
            "event" => event = Some(v),
            "connection_id" => connection_id = Some(v),
            "message" => message = Some(v),
            _ => {
                data.insert(k, v);
            }
        }
    }
    let as_text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let component = component.map_or_else(|| "server".to_owned(), as_text);
    let event = match event {
        Some(e) => as_text(e),
        None => {
            data.insert("target".into(), Value::String(target.to_owned()));
            "log".to_owned()
        }
    };
    if let Some(m) = message {
        data.insert("message".into(), m);
    }
    let level = level.as_str().to_ascii_lowercase();
    // Written by hand to keep the contract's key order (serde_json's map sorts keys).
    let mut out = String::with_capacity(160);
    out.push_str("{\"timestamp\":");
    out.push_str(&json(&now));
    out.push_str(",\"level\":");
    out.push_str(&json(&level));
    out.push_str(",\"component\":");
    out.push_str(&json(&component));
    out.push_str(",\"event\":");
    out.push_str(&json(&event));
    out.push_str(",\"data\":");
    out.push_str(&json(&data));
    if let Some(id) = connection_id {
        out.push_str(",\"connectionId\":");
        out.push_str(&json(&as_text(id)));
    }
    if let Some((trace_id, span_id)) = ids {
        out.push_str(",\"trace_id\":");
        out.push_str(&json(&trace_id));
        out.push_str(",\"span_id\":");
        out.push_str(&json(&span_id));
    }
    out.push_str("}\n");
    out
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests;
