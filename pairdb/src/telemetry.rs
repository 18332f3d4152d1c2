//! Logs to stderr and, when an OTLP endpoint is configured, traces to an OpenTelemetry collector.
//!
//! Export is configured by the standard variables: it is on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not `true`, and
//! speaks OTLP over gRPC (Jaeger's port 4317 takes it as it is). `OTEL_SERVICE_NAME` overrides
//! the role's service name (`pairdb-gateway`, `pairdb-coordinator`, `pairdb-storage`,
//! `pairdb-dev`); `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS` and
//! `OTEL_RESOURCE_ATTRIBUTES` work as the specification says. Without an endpoint no
//! OpenTelemetry layer is installed and requests cost nothing for tracing beyond the logs.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The installed telemetry; [`shutdown`](Telemetry::shutdown) exports the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// True when the environment asks for trace export.
pub fn export_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber: logs to stderr filtered by `RUST_LOG`, and span export for
/// `service` when [`export_configured`]. Must run inside a Tokio runtime (the exporter's channel
/// lives on it) and at most once per process.
pub fn init(service: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,sqlx=warn"));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let provider = export_configured().then(|| provider(service)).transpose()?;
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("pairdb"))
            // Only the spans pairdb makes for requests and the calls they cause; the libraries'
            // own spans would bury them.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("pairdb")
            }))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("installing the tracing subscriber")?;
    if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("building the OTLP span exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let resource = if named {
        Resource::builder().build()
    } else {
        Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    };
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

impl Telemetry {
    /// Exports what is queued and stops exporting; call before the runtime shuts down.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {error}");
        }
    }
}
