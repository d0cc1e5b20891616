//! A Prometheus registry served at `/metrics` on the admin port, in the format the scraper asks for: OpenMetrics
//! 1.0 (what Prometheus asks for first), or the classic text format 0.0.4 for anything else (older Prometheus,
//! `promtool check metrics`, `curl`).

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

/// Histogram bucket bounds, in seconds, for every latency konnector measures (hooks, executor RPCs, Kubernetes
/// requests). CAPI gives a hook at most 30 s, so the bounds run from 5 ms (a cached answer) through 30 s, with one
/// bucket above for the calls that overrun it; a few buckets per decade keep the series count small while
/// `histogram_quantile` stays within a factor of about 2.5.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// `text/plain; version=0.0.4`: the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A shared registry. Register metrics once at start-up; the admin server encodes them on each scrape.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    root: Registry,
    /// The prefix [`Metrics::register`] puts before every name; [`Metrics::register_unprefixed`] does not.
    prefix: Option<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry whose metric names are prefixed with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            root: Registry::default(),
            prefix: Some(prefix.to_owned()),
        })))
    }

    /// Runs `f` with the registry (under the prefix, if any), to register metrics.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { root, prefix } = &mut *inner;
        match prefix {
            Some(prefix) => f(root.sub_registry_with_prefix(prefix.as_str())),
            None => f(root),
        }
    }

    /// Runs `f` with the registry without its prefix, for the few names shared by both binaries
    /// (`konnector_build_info`).
    pub fn register_unprefixed(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).root);
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &inner.root);
        out
    }

    /// The registry in the classic Prometheus text format (0.0.4).
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// A router serving `/metrics`, to merge into the admin router.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let openmetrics = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(prefers_openmetrics);
                let (content_type, body) = if openmetrics {
                    (OPENMETRICS_CONTENT_TYPE, metrics.encode())
                } else {
                    (TEXT_CONTENT_TYPE, metrics.encode_text())
                };
                async move { ([(header::CONTENT_TYPE, content_type)], body).into_response() }
            }),
        )
    }
}

/// Registers `konnector_build_info{component,version,revision} 1` in `metrics`: the usual way to see which build
/// runs where (`count by (version) (konnector_build_info)`) and to join it onto other series.
pub fn register_build_info(metrics: &Metrics, component: &str) {
    let info = Family::<Vec<(&'static str, String)>, Gauge>::default();
    info.get_or_create(&vec![
        ("component", component.to_owned()),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("revision", crate::GIT_REVISION.to_owned()),
    ])
    .set(1);
    // A gauge rather than prometheus-client's Info type: the classic text format (and promtool) has no `info`.
    metrics.register_unprefixed(|r| {
        r.register(
            "konnector_build_info",
            "Always 1; the labels name the component, its version and the git revision it was built from",
            info,
        )
    });
}

/// Whether an `Accept` header ranks OpenMetrics text above the classic text format (q-values honoured; a type
/// not named ranks as `*/*` does, or 0).
fn prefers_openmetrics(accept: &str) -> bool {
    let mut openmetrics = None::<f32>;
    let mut text = None::<f32>;
    let mut any = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut openmetrics,
            "text/plain" => &mut text,
            "*/*" => {
                any = any.max(q);
                continue;
            }
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    let openmetrics = openmetrics.unwrap_or(any);
    openmetrics > 0.0 && openmetrics > text.unwrap_or(any)
}

/// Rewrites prometheus-client's OpenMetrics output as the classic text format: a counter family is named with its
/// `_total` suffix (its samples already carry it), `_created` samples, `# UNIT` lines and `# EOF` go, and an
/// `info` family becomes a gauge named `<name>_info`. Everything else is the same in both formats.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut families: Vec<Parsed<'_>> = Vec::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(Parsed::new(name, Some(help)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            match families.last_mut() {
                Some(f) if f.name == name && f.kind.is_none() => f.kind = Some(kind.to_owned()),
                _ => {
                    let mut f = Parsed::new(name, None);
                    f.kind = Some(kind.to_owned());
                    families.push(f);
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match families.last_mut() {
            Some(f) => f.samples.push(line),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for f in families {
        let (name, kind) = match f.kind.as_deref() {
            Some("counter") => (format!("{}_total", f.name), "counter"),
            Some("info") => (format!("{}_info", f.name), "gauge"),
            Some("unknown") | None => (f.name.to_owned(), "untyped"),
            Some(other) => (f.name.to_owned(), other),
        };
        if let Some(help) = f.help {
            // OpenMetrics escapes `"` in HELP; the classic format does not know that escape.
            out.push_str(&format!("# HELP {name} {}\n", help.replace("\\\"", "\"")));
        }
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        let created = format!("{}_created", f.name);
        for sample in f.samples {
            let sample_name = sample.split(['{', ' ']).next().unwrap_or("");
            if kind == "counter" && sample_name == created {
                continue;
            }
            // Exemplars (` # {…} v`) exist only in OpenMetrics.
            let sample = match sample.find(" # {") {
                Some(i) => &sample[..i],
                None => sample,
            };
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// One metric family while converting.
struct Parsed<'a> {
    name: &'a str,
    help: Option<&'a str>,
    kind: Option<String>,
    samples: Vec<&'a str>,
}

impl<'a> Parsed<'a> {
    fn new(name: &'a str, help: Option<&'a str>) -> Self {
        Self {
            name,
            help,
            kind: None,
            samples: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::{counter::Counter, info::Info};

    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let metrics = Metrics::with_prefix("konnector");
        let c = Counter::<u64>::default();
        metrics.register(|r| r.register("hooks", "Hook requests", c.clone()));
        c.inc();
        let text = metrics.encode();
        assert!(text.contains("konnector_hooks_total 1"), "{text}");
    }

    #[test]
    fn build_info_is_unprefixed_and_set_to_one() {
        let metrics = Metrics::with_prefix("konnector_executor");
        register_build_info(&metrics, "executor");
        let text = metrics.encode_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("konnector_build_info{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("component=\"executor\""), "{line}");
        assert!(
            line.contains(&format!("revision=\"{}\"", crate::GIT_REVISION)),
            "{line}"
        );
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[test]
    fn classic_text_names_counter_families_with_total() {
        let metrics = Metrics::with_prefix("k");
        let c = Counter::<u64>::default();
        let h = latency_histogram();
        metrics.register(|r| {
            r.register("requests", "Requests \"answered\"", c.clone());
            r.register("latency_seconds", "Latency", h.clone());
            r.register("build", "Build", Info::new(vec![("v", "1")]));
        });
        c.inc();
        h.observe(0.2);
        let text = metrics.encode_text();
        assert!(
            text.contains("# HELP k_requests_total Requests \"answered\".\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE k_requests_total counter\nk_requests_total 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE k_latency_seconds histogram\n"), "{text}");
        assert!(
            text.contains("k_latency_seconds_bucket{le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE k_build_info gauge\nk_build_info{v=\"1\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        // What Prometheus 2.x sends: OpenMetrics first.
        assert!(prefers_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        // What Prometheus 3 sends by default.
        assert!(prefers_openmetrics(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ));
        assert!(!prefers_openmetrics("text/plain;version=0.0.4"));
        assert!(!prefers_openmetrics("*/*"));
        assert!(!prefers_openmetrics(
            "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
        ));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0"));
    }
}
