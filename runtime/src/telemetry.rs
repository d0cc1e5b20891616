//! Structured logging and tracing.
//!
//! Logs are one line per event, plain or JSON, filtered by a `RUST_LOG`-style directive. Traces go to an
//! OTLP/gRPC collector when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! variable is set, and are off otherwise; the exporter reads the other `OTEL_*` variables itself. W3C
//! `traceparent` is the propagation format.

use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{
    EnvFilter, Layer, fmt, layer::SubscriberExt, registry::LookupSpan, util::SubscriberInitExt,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Plain,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Logging flags shared by both binaries.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info,konnector_executor=debug`).
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long = "log-format", env = "KONNECTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Keeps the trace pipeline alive; dropping it flushes and shuts the exporter down.
#[must_use = "dropping Telemetry shuts tracing down"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Keeps `provider` alive until dropped, then flushes it: for a process that builds its own subscriber
    /// around [`tracing_layer`].
    pub fn from_provider(provider: Option<SdkTracerProvider>) -> Self {
        Self { provider }
    }

    /// Whether spans are exported.
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("failed to flush traces on shutdown: {error}");
        }
    }
}

/// Whether the environment asks for OTLP trace export.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

impl LogArgs {
    /// Installs the global subscriber for logs only.
    pub fn init(&self) -> anyhow::Result<()> {
        drop(self.install(None)?);
        Ok(())
    }

    /// Installs the global subscriber: logs always, OTLP traces when configured. `service_name` is used unless
    /// `OTEL_SERVICE_NAME` says otherwise. Fails if the filter does not parse, so a typo is not silently ignored.
    pub fn init_with_tracing(&self, service_name: &str) -> anyhow::Result<Telemetry> {
        self.install(Some(service_name))
    }

    fn install(&self, service_name: Option<&str>) -> anyhow::Result<Telemetry> {
        let filter = EnvFilter::try_new(&self.log_level)?;
        let fmt_layer = match self.log_format {
            LogFormat::Plain => fmt::layer().with_target(true).boxed(),
            LogFormat::Json => fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .boxed(),
        };
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = match service_name {
            Some(name) if otlp_configured() => Some((otlp_provider(name)?, name.to_owned())),
            _ => None,
        };
        let otel_layer = provider.as_ref().map(|(p, name)| tracing_layer(p, name));
        let provider = provider.map(|(p, _)| p);
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer)
            .with(otel_layer)
            .try_init()?;
        Ok(Telemetry { provider })
    }
}

/// The layer that turns `tracing` spans into OpenTelemetry spans exported by `provider`. Also installs the W3C
/// TraceContext propagator process-wide, which the gateway and executor use to carry the trace across their hop.
pub fn tracing_layer<S>(provider: &SdkTracerProvider, service_name: &str) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned()))
}

/// A tracer provider exporting over OTLP/gRPC with the endpoint and options from `OTEL_*` variables.
pub fn otlp_provider(service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    otlp_provider_to(service_name, None)
}

/// Like [`otlp_provider`], but exporting to `endpoint` (e.g. `http://127.0.0.1:4317`) when given, whatever the
/// environment says. Must be called inside a Tokio runtime, which then carries the exporter's connection.
pub fn otlp_provider_to(service_name: &str, endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
