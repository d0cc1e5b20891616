//! Unit tests of the log and trace set-up.

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
