//! Structured logging and tracing.
//!
//! Logs are one line per event, plain or JSON, filtered by a `RUST_LOG`-style directive. A line written inside a
//! traced request carries that request's `trace_id`, whichever binary writes it, whether or not spans are exported:
//! an operator correlates a hook's log lines across the gateway and the executor by it. Plain lines are coloured
//! only when stdout is a terminal and `NO_COLOR` is unset, so pipes and log files get no escape codes.
//!
//! Traces go to an OTLP collector when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set, and are off otherwise. The transport follows
//! `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `grpc` (konnector's default, as before) or `http/protobuf`. For
//! OTLP/HTTP the generic endpoint is a base URL that gets `/v1/traces` appended, path or not, and the
//! traces-specific one is used as it is, as the OTLP exporter specification says. An `https://` endpoint is
//! verified against `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` when set, else the system's roots, and
//! `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE`/`_CLIENT_KEY` add a client certificate.
//! `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION` is `gzip` or `none`; anything else stops the binary at start-up
//! rather than being ignored. The exporter reads the other `OTEL_*` variables itself (timeout, headers). The
//! resource carries `service.name`, `service.version` (the binary's [`crate::VERSION`]) and whatever
//! `OTEL_RESOURCE_ATTRIBUTES` adds or overrides. W3C `traceparent` is the propagation format.

use std::{future::Future, io::IsTerminal as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        self, FmtContext, FormatEvent, FormatFields,
        format::{Format, Full, Json, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

mod otlp;

pub use otlp::{
    OtlpCompression, OtlpExport, OtlpProtocol, otlp_provider, otlp_provider_to, resource, tracing_layer,
};

/// Attribute keys konnector puts on its spans: OpenTelemetry's semantic conventions where one exists (from the
/// `opentelemetry-semantic-conventions` crate, never retyped), and konnector's own under `konnector.`, never under
/// a namespace OpenTelemetry reserves (such as `k8s.`).
pub mod attr {
    pub use opentelemetry_semantic_conventions::attribute::{
        ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, RPC_METHOD,
        RPC_RESPONSE_STATUS_CODE, RPC_SYSTEM_NAME, SERVER_ADDRESS, SERVER_PORT, URL_PATH, URL_SCHEME,
    };
    pub use opentelemetry_semantic_conventions::resource::{SERVICE_NAME, SERVICE_VERSION};

    /// `rpc.system.name` of konnector's gRPC spans.
    pub const RPC_SYSTEM_NAME_GRPC: &str = "grpc";

    /// The CAPI lifecycle hook a span serves, e.g. `AfterControlPlaneInitialized`.
    pub const KONNECTOR_HOOK: &str = "konnector.hook";
    /// The namespace of the CAPI Cluster the request is about.
    pub const KONNECTOR_CLUSTER_NAMESPACE: &str = "konnector.cluster.namespace";
    /// The name of the CAPI Cluster the request is about.
    pub const KONNECTOR_CLUSTER_NAME: &str = "konnector.cluster.name";
    /// How the request ended: the hook answer's status (`Success`/`Failure`) on the gateway, `ok` or the gRPC code
    /// name on the executor.
    pub const KONNECTOR_OUTCOME: &str = "konnector.outcome";
    /// The hook answer's `retryAfterSeconds`, when it carries one.
    pub const KONNECTOR_HOOK_RETRY_AFTER_SECONDS: &str = "konnector.hook.retry_after_seconds";
    /// ApplyAgent's trigger, e.g. `TRIGGER_AFTER_CONTROL_PLANE_INITIALIZED`.
    pub const KONNECTOR_TRIGGER: &str = "konnector.trigger";
    /// RemoveAgent's uninstall phase, e.g. `UNINSTALL_PHASE_IN_PROGRESS`.
    pub const KONNECTOR_UNINSTALL_PHASE: &str = "konnector.uninstall.phase";
    /// Which Kubernetes API server a request went to: `management` or `workload`.
    pub const KONNECTOR_KUBE_CLUSTER: &str = "konnector.kube.cluster";
    /// The Kubernetes verb of an API request, e.g. `get`, `patch`.
    pub const KONNECTOR_KUBE_VERB: &str = "konnector.kube.verb";
    /// The Kubernetes resource of an API request, e.g. `secrets`, `helmchartproxies`.
    pub const KONNECTOR_KUBE_RESOURCE: &str = "konnector.kube.resource";
    /// The Kubernetes namespace of an API request (empty for cluster-scoped ones).
    pub const KONNECTOR_KUBE_NAMESPACE: &str = "konnector.kube.namespace";
}

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
    exporting: bool,
}

impl Telemetry {
    /// Keeps `provider` alive until dropped, then flushes it: for a process that builds its own subscriber
    /// around [`tracing_layer`].
    pub fn from_provider(provider: Option<SdkTracerProvider>) -> Self {
        let exporting = provider.is_some();
        Self { provider, exporting }
    }

    /// Whether spans are exported.
    pub fn tracing_enabled(&self) -> bool {
        self.exporting
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "failed to flush traces on shutdown");
        }
    }
}

/// The first non-empty value among the trace-specific variable and the generic one, e.g.
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` then `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn otlp_env(suffix: &str) -> Option<String> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// Whether the environment asks for OTLP trace export.
pub fn otlp_configured() -> bool {
    otlp_env("ENDPOINT").is_some()
}

/// Parses a binary's flags like `A::parse()`, except that a flag error is logged as one JSON line when the command
/// line or the environment asks for JSON logs (`--log-format json`, `KONNECTOR_LOG_FORMAT=json`, as the chart
/// does), so a log pipeline sees it too. `--help` and `--version`, and errors in plain mode, print as clap prints
/// them. Exits with clap's code (2) on an error.
pub fn parse_flags<A: clap::Parser>() -> A {
    let error = match A::try_parse() {
        Ok(args) => return args,
        Err(error) => error,
    };
    let argv: Vec<String> = std::env::args().collect();
    let json = argv.windows(2).any(|w| w[0] == "--log-format" && w[1] == "json")
        || argv.iter().any(|a| a == "--log-format=json")
        || std::env::var("KONNECTOR_LOG_FORMAT").is_ok_and(|f| f == "json");
    if !json || !error.use_stderr() {
        error.exit()
    }
    let log = LogArgs {
        log_level: "info".to_owned(),
        log_format: LogFormat::Json,
    };
    let _ = log.init();
    tracing::error!(error = %error.render().to_string().trim(), "invalid command line or environment");
    std::process::exit(error.exit_code())
}

/// The message logged for a deprecated flag `--old` that still works, replaced by `--new`.
pub fn deprecation(old: &str, new: &str) -> String {
    format!("--{old} is deprecated and will be removed in the next release; use --{new}")
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

    /// A binary's whole life after flag parsing: installs logging and tracing, logs each of `warnings` (deprecated
    /// flags), runs `run`, and turns a fatal error into one log line in the configured format (plain or JSON) and
    /// exit code 1. When logging itself cannot be set up (a bad filter, an unusable OTLP configuration), the error
    /// is still logged in the configured format, through a subscriber at `info` without tracing.
    pub async fn run_main(
        &self,
        service_name: &str,
        warnings: Vec<String>,
        run: impl Future<Output = anyhow::Result<()>>,
    ) -> ExitCode {
        // Before anything builds a TLS client: the OTLP/HTTP exporter's client is built below, and reqwest's rustls
        // takes the process-wide provider, which must exist by then.
        crate::tls::install_crypto_provider();
        let telemetry = match self.init_with_tracing(service_name) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                let fallback = LogArgs {
                    log_level: "info".to_owned(),
                    log_format: self.log_format,
                };
                let _ = fallback.init();
                tracing::error!(
                    error = format!("{error:#}"),
                    "{service_name} cannot start: logging or tracing setup failed"
                );
                return ExitCode::FAILURE;
            }
        };
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(version = crate::VERSION, "{service_name} starting");
        let result = run.await;
        let code = match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "{service_name} stopped on a fatal error"
                );
                ExitCode::FAILURE
            }
        };
        drop(telemetry);
        code
    }

    fn install(&self, service_name: Option<&str>) -> anyhow::Result<Telemetry> {
        let filter = EnvFilter::try_new(&self.log_level)?;
        let fmt_layer = match self.log_format {
            LogFormat::Plain => fmt::layer()
                .with_ansi(colour_stdout())
                .with_target(true)
                .event_format(WithTraceId::plain())
                .boxed(),
            LogFormat::Json => fmt::layer().json().event_format(WithTraceId::json()).boxed(),
        };
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // A binary always gets trace context, exported or not: without a tracer there are no trace ids, and log
        // lines could not be correlated across the gateway and the executor (the traceparent still crosses the
        // hop, so both write the same id). Without an exporter the provider has no processor, and a finished span
        // is dropped.
        let (provider, exporting) = match service_name {
            Some(name) if otlp_configured() => (Some((otlp_provider(name)?, name.to_owned())), true),
            Some(name) => (
                Some((
                    SdkTracerProvider::builder().with_resource(resource(name)).build(),
                    name.to_owned(),
                )),
                false,
            ),
            None => (None, false),
        };
        let otel_layer = provider.as_ref().map(|(p, name)| tracing_layer(p, name));
        let provider = provider.map(|(p, _)| p);
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer)
            .with(otel_layer)
            .try_init()?;
        Ok(Telemetry { provider, exporting })
    }
}

/// Whether plain log lines may carry ANSI colours: only for a terminal, and not when `NO_COLOR` is set
/// (<https://no-color.org>). Pipes, files and container logs get none, so grep and log pipelines see the text.
fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An event format that adds the current OpenTelemetry trace id to every line written inside a traced span:
/// ` trace_id=<32 hex>` at the end of a plain line, a `"trace_id"` member of a JSON line. Lines outside any trace
/// are written unchanged. It needs the subscriber installed process-wide (as [`LogArgs`] does): inside a scoped
/// subscriber's event, tracing hides the dispatcher the trace id is looked up through.
pub struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl WithTraceId<Format<Full>> {
    /// The plain format (the `fmt` default), with trace ids.
    pub fn plain() -> Self {
        Self {
            inner: Format::default().with_target(true),
            json: false,
        }
    }
}

impl WithTraceId<Format<Json>> {
    /// The JSON format, one flat object per line, with trace ids.
    pub fn json() -> Self {
        Self {
            inner: Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false),
            json: true,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(trace_id) = crate::propagation::current_trace_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Formatted into a buffer first, because both formats end the line themselves; the buffer has no ANSI
        // colours, which a traced line in a terminal therefore loses.
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_suffix('}') {
            Some(object) if self.json => writeln!(writer, "{object},\"trace_id\":\"{trace_id}\"}}"),
            _ => writeln!(writer, "{line} trace_id={trace_id}"),
        }
    }
}

#[cfg(test)]
mod tests;
