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

/// The layer that turns `tracing` spans into OpenTelemetry spans exported by `provider`. Also installs the W3C
/// TraceContext propagator process-wide, which the gateway and executor use to carry the trace across their hop.
pub fn tracing_layer<S>(provider: &SdkTracerProvider, service_name: &str) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned()))
}

/// A tracer provider exporting over OTLP with the endpoint and options from `OTEL_*` variables.
pub fn otlp_provider(service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    OtlpExport::from_env()?.provider(service_name)
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`), usually port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), usually port 4318, path `/v1/traces`.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` names; gRPC when unset.
    pub fn from_env() -> anyhow::Result<Self> {
        match otlp_env("PROTOCOL").as_deref().map(str::trim) {
            None | Some("grpc") => Ok(Self::Grpc),
            Some("http/protobuf") => Ok(Self::HttpProtobuf),
            Some(other) => anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use grpc or http/protobuf"
            ),
        }
    }
}

/// The OTLP payload compression (`OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpCompression {
    /// Uncompressed (`none`, or unset).
    #[default]
    None,
    /// gzip (`Content-Encoding: gzip` over HTTP, `grpc-encoding: gzip` over gRPC).
    Gzip,
}

impl OtlpCompression {
    /// What `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION` asks for. A value konnector's exporter cannot do (`zstd`, a
    /// typo) is an error, so the binary refuses to start instead of silently sending uncompressed.
    pub fn from_env() -> anyhow::Result<Self> {
        match otlp_env("COMPRESSION")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("none") => Ok(Self::None),
            Some("gzip") => Ok(Self::Gzip),
            Some(other) => {
                anyhow::bail!("OTEL_EXPORTER_OTLP_COMPRESSION={other:?} is not supported: use gzip or none")
            }
        }
    }

    fn exporter(self) -> Option<opentelemetry_otlp::Compression> {
        match self {
            Self::None => None,
            Self::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        }
    }
}

/// Where and how spans are exported: what the `OTEL_EXPORTER_OTLP_*` variables say ([`OtlpExport::from_env`]),
/// or set in code (the sandbox's `--otlp-endpoint`, the tests' receivers).
#[derive(Clone, Debug, Default)]
pub struct OtlpExport {
    /// The collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it, e.g. `http://127.0.0.1:4317`. For
    /// OTLP/HTTP, `/v1/traces` is appended to it, whatever path it has (the specification's rule for the generic
    /// variable). `None` (with no `traces_endpoint`) leaves it to the exporter's own defaults.
    pub endpoint: Option<String>,
    /// The traces URL, as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` gives it: used as it is, and it wins over
    /// `endpoint`.
    pub traces_endpoint: Option<String>,
    /// gRPC or HTTP/protobuf.
    pub protocol: OtlpProtocol,
    /// PEM CA bundle an `https://` collector's certificate must chain to; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key presented to the collector.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Payload compression.
    pub compression: OtlpCompression,
}

impl OtlpExport {
    /// What the environment says: `OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,PROTOCOL,CERTIFICATE,CLIENT_CERTIFICATE,
    /// CLIENT_KEY,COMPRESSION}`.
    pub fn from_env() -> anyhow::Result<Self> {
        let client_identity = match (otlp_env("CLIENT_CERTIFICATE"), otlp_env("CLIENT_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => anyhow::bail!(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together"
            ),
        };
        let var = |name: &str| std::env::var(name).ok().filter(|s| !s.trim().is_empty());
        Ok(Self {
            endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            traces_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            protocol: OtlpProtocol::from_env()?,
            ca: otlp_env("CERTIFICATE").map(PathBuf::from),
            client_identity,
            compression: OtlpCompression::from_env()?,
        })
    }

    fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("cannot read OTLP TLS file {}", path.display()))
    }

    /// The URL spans are sent to, by the specification's rules for `protocol`; `None` for the exporter's default.
    pub fn url(&self) -> Option<String> {
        if let Some(url) = &self.traces_endpoint {
            return Some(url.trim().to_owned());
        }
        let base = self.endpoint.as_deref()?.trim();
        Some(match self.protocol {
            OtlpProtocol::Grpc => base.to_owned(),
            OtlpProtocol::HttpProtobuf => http_traces_url(base),
        })
    }

    fn https(&self) -> bool {
        self.url()
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("https://"))
    }

    fn tonic_tls(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(Self::read(ca)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.client_identity {
            config = config.identity(Identity::from_pem(Self::read(cert)?, Self::read(key)?));
        }
        Ok(config)
    }

    /// A blocking client: the SDK's batch processor exports from its own thread, outside any async runtime. It is
    /// built on a thread of its own because reqwest's blocking client must not be built inside one.
    fn http_client(&self) -> anyhow::Result<reqwest::blocking::Client> {
        // reqwest's rustls takes the process-wide crypto provider and panics without one; whoever calls this
        // (a binary's start-up, a test, the sandbox) gets ring, the tree's only provider.
        crate::tls::install_crypto_provider();
        let ca = self.ca.as_ref().map(Self::read).transpose()?;
        let identity = match &self.client_identity {
            Some((cert, key)) => {
                let mut pem = Self::read(cert)?;
                pem.extend_from_slice(&Self::read(key)?);
                Some(pem)
            }
            None => None,
        };
        std::thread::spawn(move || {
            let mut builder =
                reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(10));
            if let Some(ca) = ca {
                for cert in reqwest::Certificate::from_pem_bundle(&ca)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let Some(pem) = identity {
                builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
            }
            anyhow::Ok(builder.build()?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?
    }

    /// A tracer provider exporting as described, with konnector's [`resource`] for `service_name`. Must be
    /// called inside a Tokio runtime, which then carries the gRPC exporter's connection.
    pub fn provider(&self, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
        let url = self.url();
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if let Some(url) = url {
                    exporter = exporter.with_endpoint(url);
                }
                if self.https() {
                    exporter = exporter.with_tls_config(self.tonic_tls()?);
                }
                if let Some(compression) = self.compression.exporter() {
                    exporter = exporter.with_compression(compression);
                }
                exporter.build()?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_http_client(self.http_client()?);
                if let Some(url) = url {
                    exporter = exporter.with_endpoint(url);
                }
                if let Some(compression) = self.compression.exporter() {
                    exporter = exporter.with_compression(compression);
                }
                exporter.build()?
            }
        };
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name))
            .build())
    }
}

/// Like [`otlp_provider`], but exporting to `endpoint` (a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` would give
/// it, e.g. `http://127.0.0.1:4317`) when given, whatever the environment says; the other settings still come from
/// the environment. Must be called inside a Tokio runtime.
pub fn otlp_provider_to(service_name: &str, endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let mut export = OtlpExport::from_env()?;
    if let Some(endpoint) = endpoint {
        export.endpoint = Some(endpoint.to_owned());
        export.traces_endpoint = None;
    }
    export.provider(service_name)
}

/// The OTLP/HTTP traces URL of a base `endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`): the base with `v1/traces`
/// appended as a path segment, whatever path it already has, as the OTLP exporter specification says
/// (`http://collector:4318/otlp` sends to `http://collector:4318/otlp/v1/traces`).
fn http_traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// The resource of konnector's spans: the SDK's detectors (which read `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`), `service.name` = `service_name` unless the environment names one, and
/// `service.version` = [`crate::VERSION`] unless `OTEL_RESOURCE_ATTRIBUTES` sets it.
pub fn resource(service_name: &str) -> Resource {
    let from_env = Resource::builder().build();
    let mut builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err()
        && from_env
            .get(&opentelemetry::Key::from_static_str(attr::SERVICE_NAME))
            .is_none_or(|v| v.as_str().starts_with("unknown_service"))
    {
        builder = builder.with_service_name(service_name.to_owned());
    }
    if from_env
        .get(&opentelemetry::Key::from_static_str(attr::SERVICE_VERSION))
        .is_none()
    {
        builder = builder.with_attribute(KeyValue::new(attr::SERVICE_VERSION, crate::VERSION));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generic_endpoint_gets_the_traces_path_and_the_traces_endpoint_is_used_as_is() {
        let http = |endpoint: Option<&str>, traces: Option<&str>| OtlpExport {
            endpoint: endpoint.map(str::to_owned),
            traces_endpoint: traces.map(str::to_owned),
            protocol: OtlpProtocol::HttpProtobuf,
            ..OtlpExport::default()
        };
        let url = |e: OtlpExport| e.url().unwrap();
        assert_eq!(
            url(http(Some("https://collector:4318"), None)),
            "https://collector:4318/v1/traces"
        );
        assert_eq!(
            url(http(Some("https://collector:4318/"), None)),
            "https://collector:4318/v1/traces"
        );
        // A base with a path keeps it, and still gets the signal's path (the specification's own example).
        assert_eq!(
            url(http(Some("http://collector/otlp"), None)),
            "http://collector/otlp/v1/traces"
        );
        assert_eq!(
            url(http(Some("http://collector/otlp/"), None)),
            "http://collector/otlp/v1/traces"
        );
        // The traces-specific variable is the whole URL, and wins.
        assert_eq!(
            url(http(
                Some("http://generic:4318"),
                Some("http://collector/custom/spans")
            )),
            "http://collector/custom/spans"
        );
        assert_eq!(
            url(http(None, Some("http://collector:4318"))),
            "http://collector:4318"
        );
        assert_eq!(http(None, None).url(), None);
        // gRPC has no path: the generic endpoint is the whole target.
        let grpc = OtlpExport {
            endpoint: Some("http://collector:4317".into()),
            protocol: OtlpProtocol::Grpc,
            ..OtlpExport::default()
        };
        assert_eq!(url(grpc), "http://collector:4317");
    }

    #[test]
    fn the_resource_names_the_service_and_its_version() {
        let r = resource("konnector-test");
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get(attr::SERVICE_VERSION).as_deref(), Some(crate::VERSION));
        if std::env::var("OTEL_SERVICE_NAME").is_err() && std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_err() {
            assert_eq!(get(attr::SERVICE_NAME).as_deref(), Some("konnector-test"));
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One test, because it installs the process-wide subscriber, as the binaries do: the trace id is looked up
    /// through the current dispatcher, which tracing hides from code running inside a *scoped* subscriber's event.
    #[test]
    fn lines_inside_a_trace_carry_its_trace_id_in_both_formats() {
        let (json, plain) = (Buffer::default(), Buffer::default());
        let provider = SdkTracerProvider::builder().build();
        let (j, p) = (json.clone(), plain.clone());
        tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .json()
                    .event_format(WithTraceId::json())
                    .with_writer(move || j.clone()),
            )
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .event_format(WithTraceId::plain())
                    .with_writer(move || p.clone()),
            )
            .with(tracing_layer(&provider, "konnector-test"))
            .init();
        tracing::info!("outside");
        let trace_id = {
            let span = tracing::info_span!("request");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
            crate::propagation::current_trace_id().expect("a trace id inside the span")
        };
        let text = |b: &Buffer| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();

        let json = text(&json);
        let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{json}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "{json}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["answer"], 42);
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());

        let plain = text(&plain);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 2, "{plain}");
        assert!(lines[0].ends_with("outside"), "{plain}");
        assert!(
            lines[1].ends_with(&format!("inside answer=42 trace_id={trace_id}")),
            "{plain}"
        );
    }
}
