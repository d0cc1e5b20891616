//! Runs a konnector binary as the chart runs it (JSON logs, no inherited log or OTLP settings) and reads its stdout
//! as JSON lines. One file shared by source: the executor's and the gateway's start-up tests include it with
//! `#[path]`, since `CARGO_BIN_EXE_*` only exists in a binary's own package.

/// Runs `binary` with `args` and JSON logs; returns its exit code and its stdout lines parsed as JSON.
pub(crate) fn run_json(binary: &str, args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = std::process::Command::new(binary)
        .args(args)
        .env("KONNECTOR_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    (out.status.code(), lines)
}
