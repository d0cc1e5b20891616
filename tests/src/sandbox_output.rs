//! What `konnector-sandbox` prints beside the lives themselves: the stand-in's step lines, the outcome line, and
//! what `--keep` prints before the commands. Here rather than in the binary, so its main stays thin.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    sandbox::SandboxState,
    sandbox_commands::{TryCommand, cli_program},
    scenario::StepReport,
};

/// Prints one step of the CAPI stand-in's scenario: its wait answers, the step with its hook answer, and the
/// objects it changed.
pub fn print_step(cluster: &str, step: &StepReport) {
    let mark = if step.ok { "ok  " } else { "FAIL" };
    let mut line = format!("{mark} [{cluster}] {}", step.step);
    if let Some(gw) = &step.gateway {
        line.push_str(&format!(" via {gw}"));
    }
    if let Some(a) = &step.answer {
        line.push_str(&format!(" -> {}", a.status));
        if let Some(r) = a.retry_after_seconds {
            line.push_str(&format!(" retryAfterSeconds={r}"));
        }
        if step.calls > 1 {
            line.push_str(&format!(" after {} calls", step.calls));
        }
        if !a.message.is_empty() {
            line.push_str(&format!(" \"{}\"", a.message));
        }
    }
    line.push_str(&format!(" ({} ms)", step.millis));
    let mut out = std::io::stdout().lock();
    for wait in &step.waits {
        let _ = writeln!(
            out,
            "wait [{cluster}] {} -> {} retryAfterSeconds={} \"{}\"",
            step.step,
            wait.status,
            wait.retry_after_seconds.unwrap_or_default(),
            wait.message
        );
    }
    let _ = writeln!(out, "{line}");
    for change in &step.changes {
        let _ = writeln!(out, "       {change}");
    }
    if let Some(e) = &step.error {
        let _ = writeln!(out, "       error: {e}");
    }
}

/// Prints how the lives went and where the summary is.
pub fn print_outcome(ok: bool, millis: u128, state_dir: &Path, temporary: bool) {
    println!(
        "{} in {:.1}s; the summary is in {}{}",
        if ok {
            "every step behaved as expected"
        } else {
            "a step misbehaved"
        },
        millis as f64 / 1000.0,
        state_dir.join("summary.json").display(),
        if temporary {
            " (removed on exit; --state-dir DIR keeps it)"
        } else {
            ""
        }
    );
}

/// Every `/metrics` URL with its binary's name, on one line.
pub fn metrics_list(state: &SandboxState) -> String {
    state
        .metrics_urls
        .iter()
        .map(|(name, url)| format!("{name} {url}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `--keep` prints once the lives are over: where things are, then each command under what it shows.
/// `inside` says where the in-process binaries log.
pub fn print_try(commands: &[TryCommand], state: &SandboxState, state_dir: &Path, inside: &str) {
    let tools = hack_dir();
    println!(
        "\nkonnector keeps serving, with {} installed. Try these (also in {}):",
        state.kept_cluster.clone().unwrap_or_default(),
        state_dir.join("try.sh").display()
    );
    // hack/sandbox.sh put the tools on this process's PATH, not on the caller's shell's: say how.
    println!(
        "(they use kubectl, grpcurl, curl and the konnector CLI: `. {}/env.sh` puts grpcurl on your shell's PATH)",
        tools.display()
    );
    // The executor and the gateways are libraries here, not processes: say where their logs and metrics are.
    println!("{inside}");
    let cli = cli_program();
    if !Path::new(&cli).is_file() {
        println!("({cli} not found: `cargo build -p konnector-cli` builds the konnector CLI)");
    }
    let missing = missing_tools();
    if !missing.is_empty() {
        println!(
            "({} not found: `bash {}/ensure-tools.sh grpcurl kubectl` installs them)",
            missing.join(", "),
            tools.display()
        );
    }
    for c in commands {
        println!("\n# {}\n$ {}", c.what, c.command);
    }
    println!("\nNext, on a real management cluster: docs/operating.md.");
    println!("press Ctrl-C to stop everything");
}

/// The repository's `hack/` directory as the person reading the output would type it: relative when the sandbox runs
/// from the repository root (as hack/sandbox.sh runs it), absolute otherwise. An absolute path from the machine
/// that ran it has no place in output people copy from.
fn hack_dir() -> PathBuf {
    let root = crate::tools::repo_root();
    let root = root.canonicalize().unwrap_or(root);
    let here = std::env::current_dir().and_then(|d| d.canonicalize());
    if here.is_ok_and(|d| d == root) {
        PathBuf::from("hack")
    } else {
        root.join("hack")
    }
}

/// The executables the printed commands need, and whether each is on PATH.
fn missing_tools() -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["kubectl", "grpcurl", "curl"]
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect()
}
