//! Span export over OTLP (gRPC or HTTP), configured from the standard OTEL_EXPORTER_OTLP_* variables.

use super::*;

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
