//! What the tests share beyond the fixtures: one hang guard, one log capture, one secret check, the golden hook
//! bodies, and one ApplyAgent call.

use std::{
    future::Future,
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use konnector_proto::v1::{
    ApplyAgentRequest, ApplyAgentResponse, ClusterRef, GetAgentStatusRequest, GetAgentStatusResponse,
    RemoveAgentRequest, RemoveAgentResponse, Trigger,
};
use serde_json::Value;

use konnector_gateway::catalog::Hook;

use crate::{executor_fixture::RunningExecutor, workload::WorkloadCluster};

/// How long a test waits for something that should happen before it calls it hung. A hang guard, not a
/// performance bound: generous enough for a loaded 2-core CI machine, so a failure here means "never", not "slow".
pub const HANG_GUARD: Duration = Duration::from_secs(300);

/// Awaits `fut`, panicking with `what` if it has not finished within [`HANG_GUARD`].
pub async fn within_guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG_GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("hang guard: {what} did not finish within {HANG_GUARD:?}"),
    }
}

/// Polls `check` every 100 ms until it holds, panicking with `what` after [`HANG_GUARD`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within_guard(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// The log output of this test binary, captured from the global `tracing` subscriber [`LogCapture::install`] sets.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs a plain-text subscriber writing here, with `filter` (an `EnvFilter` directive). With `span_events`,
    /// every span is written when it closes, with its fields, so a check sees spans as well as events. Once per test
    /// binary: the subscriber is global.
    pub fn install(filter: &str, span_events: bool) -> Self {
        let capture = Self::default();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(capture.clone())
            .with_ansi(false);
        if span_events {
            builder
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .init();
        } else {
            builder.init();
        }
        capture
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The forms a leaked `secret` could take in `text`: itself, and its base64 encoding (standard and URL-safe) at
/// each of the three byte alignments it can have inside a longer encoded value (a Secret's data, a Basic
/// credential, a JSON document encoded whole). Too short a run of base64 would match by chance, so an alignment
/// leaving fewer than 8 characters is not used.
fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for pad in 0..3usize {
            let mut bytes = vec![0u8; pad];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&bytes);
            // The first group holds the padding bytes when there are any; the last is partial unless the length
            // divides by 3. Both differ with what surrounds the secret, so only the groups between are searched.
            let start = if pad == 0 { 0 } else { 4 };
            let end = if bytes.len() % 3 == 0 {
                encoded.len()
            } else {
                encoded.len() - 4
            };
            if end >= start + 8 {
                forms.push(encoded[start..end].to_owned());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Asserts `text` (named `place` in the failure) holds `secret` in none of its plain or base64 forms.
pub fn assert_no_secret(place: &str, text: &str, secret: &str) {
    for form in secret_forms(secret) {
        assert!(!text.contains(&form), "{place} holds the secret (as {form:?})");
    }
}

/// The golden hook body CAPI `capi` (e.g. `v1.14`) sends for `hook`, from tests/golden.
pub fn golden_body(capi: &str, hook: Hook) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(capi)
        .join(format!("{}.json", hook.path_segment()));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Points a golden hook body at `cluster` (name, namespace, uid, cluster-name label, control-plane endpoint) and
/// its clusterConfig at credentials Secret `secret`.
pub fn retarget(mut body: Value, cluster: &WorkloadCluster, secret: &str) -> Value {
    let c = &mut body["cluster"];
    c["metadata"]["name"] = cluster.name.clone().into();
    c["metadata"]["namespace"] = cluster.namespace.clone().into();
    c["metadata"]["uid"] = cluster.uid.clone().into();
    c["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] = cluster.name.clone().into();
    c["spec"]["controlPlaneEndpoint"] = cluster.object.data["spec"]["controlPlaneEndpoint"].clone();
    if let Some(vars) = c["spec"]["topology"]["variables"].as_array_mut() {
        for var in vars.iter_mut().filter(|v| v["name"] == "clusterConfig") {
            var["value"]["addons"]["konnectorAgent"]["credentials"]["secretRef"]["name"] = secret.into();
        }
    }
    body
}

/// One ApplyAgent through `executor`'s gRPC service over mTLS, as a gateway sends it, within the hang guard.
pub async fn apply_agent(
    executor: &RunningExecutor,
    cluster: ClusterRef,
    trigger: Trigger,
) -> Result<ApplyAgentResponse, tonic::Status> {
    let mut client = executor.client().await.expect("cannot connect to the executor");
    within_guard(
        "ApplyAgent",
        client.apply_agent(ApplyAgentRequest {
            cluster: Some(cluster),
            trigger: trigger as i32,
        }),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Calls RemoveAgent for `cluster` until it answers done, as CAPI repeats BeforeClusterDelete, within the hang
/// guard; returns every answer, the last one done.
pub async fn remove_until_done(executor: &RunningExecutor, cluster: ClusterRef) -> Vec<RemoveAgentResponse> {
    let mut client = executor.client().await.expect("cannot connect to the executor");
    let mut answers = Vec::new();
    within_guard("RemoveAgent saying done", async {
        loop {
            let r = client
                .remove_agent(RemoveAgentRequest {
                    cluster: Some(cluster.clone()),
                })
                .await
                .expect("RemoveAgent failed")
                .into_inner();
            let done = r.done;
            answers.push(r);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    answers
}

/// GetAgentStatus for `cluster`.
pub async fn agent_status(executor: &RunningExecutor, cluster: ClusterRef) -> GetAgentStatusResponse {
    let mut client = executor.client().await.expect("cannot connect to the executor");
    within_guard(
        "GetAgentStatus",
        client.get_agent_status(GetAgentStatusRequest {
            cluster: Some(cluster),
        }),
    )
    .await
    .expect("GetAgentStatus failed")
    .into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_secret_in_every_encoding_and_alignment() {
        let secret = "s3cr3t-PA55-konnector";
        for (what, text) in [
            ("plain", format!("x {secret} y")),
            ("base64", base64::engine::general_purpose::STANDARD.encode(secret)),
            (
                "basic credential",
                base64::engine::general_purpose::STANDARD.encode(format!("admin:{secret}")),
            ),
            (
                "inside an encoded JSON document",
                base64::engine::general_purpose::STANDARD.encode(format!("{{\"password\":\"{secret}\"}}")),
            ),
            (
                "url-safe, two bytes in",
                base64::engine::general_purpose::URL_SAFE.encode(format!("ab{secret}")),
            ),
        ] {
            let found = std::panic::catch_unwind(|| assert_no_secret(what, &text, secret)).is_err();
            assert!(found, "{what}: {text}");
        }
        assert_no_secret("clean", "nothing to see, c3VwZXI= here", secret);
    }
}
