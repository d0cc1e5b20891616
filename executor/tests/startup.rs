//! The executor binary's start-up, run as the chart runs it (JSON logs): a deprecated flag is a warning line, and a
//! fatal error, in the flags or in the configuration they describe, is one JSON error line and a non-zero exit.

#[path = "../../tests/shared/json_run.rs"]
mod json_run;

/// Runs the binary with `args` and JSON logs; returns its exit code and its stdout lines parsed as JSON.
fn run(args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
    json_run::run_json(env!("CARGO_BIN_EXE_konnector-executor"), args)
}

#[test]
fn a_bad_flag_is_one_json_error_line() {
    let (code, lines) = run(&["--uninstall-timeout=300"]);
    assert_eq!(code, Some(2));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("--uninstall-timeout"),
        "{lines:?}"
    );
}

#[test]
fn a_fatal_configuration_error_is_logged_as_json_after_the_deprecation_warning() {
    // Plaintext on a non-loopback address is refused before anything connects.
    let (code, lines) = run(&["--grpc-addr=10.0.0.1:8090"]);
    assert_eq!(code, Some(1));
    let levels: Vec<&str> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["WARN", "INFO", "ERROR"], "{lines:?}");
    assert!(lines[0]["message"].as_str().unwrap().contains("--listen"));
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("--insecure-plaintext"),
        "{lines:?}"
    );
}
