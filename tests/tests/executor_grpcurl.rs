//! Runs the grpcurl block of docs/reference.md, verbatim, against a real executor (under its RBAC, with real API
//! servers), so every example it gives is known to work.

use std::process::Command;

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    executor_fixture::{TEST_PASSWORD, executor_env},
    tools,
    workload::ClusterOptions,
};

/// The fenced bash block between the grpcurl-examples markers in docs/reference.md.
fn documented_examples() -> String {
    let doc = std::fs::read_to_string(tools::repo_root().join("docs/reference.md")).unwrap();
    let start = doc
        .find("<!-- grpcurl-examples:start -->")
        .expect("start marker in docs/reference.md");
    let end = doc
        .find("<!-- grpcurl-examples:end -->")
        .expect("end marker in docs/reference.md");
    let block = &doc[start..end];
    let body = block.split_once("```bash\n").expect("a ```bash fence").1;
    body.rsplit_once("```").expect("a closing fence").0.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_grpcurl_examples_work() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "grpcurl",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    // The executor serves mTLS, as deployed: the documented plaintext commands run with its TLS flags instead.
    let script = documented_examples()
        .replace("127.0.0.1:8090", &env.executor.addr.to_string())
        .replace("-plaintext", &env.executor.grpcurl_tls_flags());
    assert!(
        script.matches("grpcurl").count() >= 6,
        "one example per RPC plus list and health"
    );

    let tools_bin = tools::helm().unwrap().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        tools_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docs/reference.md's grpcurl block failed:\n{stdout}\n{stderr}"
    );

    for expected in [
        "konnector.executor.v1.AgentService",
        "grpc.health.v1.Health",
        "SERVING",
        "<redacted>",
        "konnector-agent-c1",
        "credentialsCopied",
        "UNINSTALL_PHASE_",
        "RemoveAgent refused",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from the examples' output:\n{stdout}"
        );
    }
    konnector_tests::support::assert_no_secret("grpcurl's stdout", &stdout, TEST_PASSWORD);
    konnector_tests::support::assert_no_secret("grpcurl's stderr", &stderr, TEST_PASSWORD);
}
