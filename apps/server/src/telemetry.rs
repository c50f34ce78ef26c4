//! OTLP traces (CONTRACT §11): the exporter behind the `tracing` spans of [`spans`], set up from
//! the standard `OTEL_*` variables.
//!
//! API summary:
//! - [`Target::from_config`]: where spans go (`OTEL_EXPORTER_OTLP_ENDPOINT`, and
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf` → POST `{endpoint}/v1/traces`, or `grpc`
//!   → the OTLP `TraceService` at `{endpoint}`), `None` without an endpoint.
//! - [`otlp_layer`]`(&Target)`: the `tracing` layer and the provider [`crate::logging::init`]
//!   keeps in its guard; dropping the guard flushes the queue (shutdown flushes the exporter).
//! - [`enabled`]: whether spans are exported; every span helper is free when not.
//! - The span helpers ([`connection_span`], [`traced_publish`], [`http_layer`], …): see
//!   [`spans`] for the span tree.
//!
//! The SDK reads the other variables itself, with their standard meaning: `OTEL_SERVICE_NAME`
//! (default here: `tether`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`, the
//! exporter's `OTEL_EXPORTER_OTLP_HEADERS`/`_TIMEOUT`. Finished spans go through a bounded queue
//! ([`queue::QueueProcessor`]): a full queue drops spans and counts them in
//! `tether_trace_spans_dropped_total`; nothing on the message path ever waits for a collector.

pub mod queue;
pub mod spans;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{Layer, Registry};

pub use spans::{
    call_span, connection_span, hello_span, http_layer, record_close, record_resumes, record_sub,
    subscribe_span, subscribed, traced_http_publish, traced_publish,
};

use crate::config::{Config, OtlpProtocol};

/// How long one export request may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP layer is installed).
#[must_use]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, the collector's base URL.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: OtlpProtocol,
}

impl Target {
    /// The target configured, or `None` (no endpoint: no export).
    #[must_use]
    pub fn from_config(config: &Config) -> Option<Self> {
        config.otlp_endpoint.as_ref().map(|endpoint| Self {
            endpoint: endpoint.clone(),
            protocol: config.observability.otlp_protocol,
        })
    }

    /// The URL the exporter is given: `{endpoint}/v1/traces` over HTTP, `{endpoint}` for gRPC.
    #[must_use]
    pub fn export_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        match self.protocol {
            OtlpProtocol::HttpProtobuf => format!("{base}/v1/traces"),
            OtlpProtocol::Grpc => base.to_owned(),
        }
    }
}

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct TelemetryError(String);

/// The OTLP `tracing` layer and its provider (see the module docs). Call it outside any tokio
/// runtime: the HTTP exporter's blocking client builds one of its own.
pub fn otlp_layer(
    target: &Target,
) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, SdkTracerProvider), TelemetryError> {
    let on_drop = crate::metrics::span_dropped;
    let processor = match target.protocol {
        OtlpProtocol::HttpProtobuf => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(target.export_url())
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| TelemetryError(e.to_string()))?;
            queue::QueueProcessor::new(exporter, queue::MAX_QUEUE, on_drop)
        }
        OtlpProtocol::Grpc => {
            let endpoint = target.export_url();
            queue::QueueProcessor::new_tokio(
                move || {
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .with_timeout(EXPORT_TIMEOUT)
                        .build()
                        .map_err(|e| e.to_string())
                },
                queue::MAX_QUEUE,
                on_drop,
            )
            .map_err(TelemetryError)?
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !names_the_service() {
        resource = resource.with_service_name("tether");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("tether");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    ENABLED.store(true, Ordering::Relaxed);
    Ok((layer, provider))
}

/// Whether the environment names the service already (`OTEL_SERVICE_NAME`, or `service.name`
/// in `OTEL_RESOURCE_ATTRIBUTES`), which the SDK then applies.
fn names_the_service() -> bool {
    std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        })
}

/// The `trace_id` and `span_id` (lowercase hex) of the span `id`, when it is exported.
#[must_use]
pub fn ids_of(id: &tracing::span::Id) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    if !enabled() {
        return None;
    }
    let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(id, d))?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_urls_follow_the_protocol() {
        let t = |p| Target {
            endpoint: "http://collector:4318/".into(),
            protocol: p,
        };
        assert_eq!(
            t(OtlpProtocol::HttpProtobuf).export_url(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(t(OtlpProtocol::Grpc).export_url(), "http://collector:4318");
    }
}
