//! The sandbox as end-to-end tests. `konnector-sandbox` run as a person runs it, on CAPI's own core manager (the
//! default): every life played to the end, and `--keep` with every command it prints executed and its output
//! compared with the README's transcript. The CAPI stand-in's scenario for the request shapes no served CAPI
//! produces (1.10 and 1.12): several clusters in parallel, through two real gateways and the real executor.

use std::sync::Arc;

use tokio::io::AsyncBufReadExt;

use konnector_tests::{
    capi_stand_in::CapiShape,
    sandbox::{Sandbox, SandboxOptions},
    tools, transcript,
};

async fn play(shape: CapiShape, clusters: usize, rotate_credentials: bool) {
    konnector_tests::init_test_logging();
    let sandbox = Sandbox::start(SandboxOptions {
        clusters,
        shape,
        rotate_credentials,
        state_dir: None,
        keep: false,
        bad_pc_password: false,
    })
    .await
    .unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox.state_dir().join("sandbox.json")).unwrap()).unwrap();
    assert_eq!(state["gatewayUrls"].as_array().unwrap().len(), 2);
    assert_eq!(state["workloadKubeconfigs"].as_object().unwrap().len(), clusters);

    let summary = sandbox.play(Arc::new(|_: &str, _: &_| {})).await.unwrap();
    let json = serde_json::to_string_pretty(&summary).unwrap();
    assert!(summary.ok, "the lifecycle failed:\n{json}");
    assert_eq!(summary.clusters.len(), clusters);
    for cluster in &summary.clusters {
        let steps: Vec<&str> = cluster.steps.iter().map(|s| s.step.as_str()).collect();
        assert!(steps.contains(&"AfterControlPlaneInitialized"), "{steps:?}");
        assert!(steps.contains(&"BeforeClusterUpgrade"), "{steps:?}");
        let delete = cluster
            .steps
            .iter()
            .find(|s| s.step == "BeforeClusterDelete")
            .unwrap();
        assert!(
            delete.calls > 1,
            "BeforeClusterDelete waited for the uninstall: {json}"
        );
        let gateways: std::collections::BTreeSet<_> =
            cluster.steps.iter().filter_map(|s| s.gateway.clone()).collect();
        assert_eq!(gateways.len(), 2, "calls were spread over both gateways: {json}");
    }
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_capi_1_10_shape() {
    play(CapiShape::V1_10, 2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_capi_1_12_shape_with_credential_rotation() {
    play(CapiShape::V1_12, 2, true).await;
}

/// `konnector-sandbox` without `--keep`, as `./hack/sandbox.sh` runs it: CAPI v1.14.2 drives a Cluster with the
/// addon through install, upgrade and delete, a Cluster without the addon, and one whose credentials Secret is
/// missing until CAPI has shown the failed hook; every hook in the summary is a call CAPI made, and the sandbox
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_capi_plays_every_life_and_exits() {
    let state = tempfile::tempdir().unwrap();
    let mut command = sandbox_command(&["--clusters", "1", "--json", "--state-dir"]);
    command.arg(state.path());
    let out = tokio::time::timeout(konnector_tests::support::HANG_GUARD, command.output())
        .await
        .expect("the sandbox finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the sandbox exited with {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "{"),
        "--json printed no summary:\n{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["capi"], "real");
    assert_eq!(summary["capiVersion"], "v1.14.2");
    let hooks = |cluster: &str, handler: &str| -> Vec<serde_json::Value> {
        let c = summary["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cluster"] == cluster)
            .unwrap_or_else(|| panic!("no {cluster} in {summary:#}"));
        c["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["handler"] == format!("{handler}.konnector"))
            .cloned()
            .collect()
    };
    // The Cluster with the addon: each hook as CAPI called it.
    let acpi = hooks("tenants/wl-1", "konnector-acpi");
    assert_eq!(acpi.len(), 1, "ACPI is called once when it succeeds: {acpi:#?}");
    assert_eq!(acpi[0]["status"], "Success");
    let bcu = hooks("tenants/wl-1", "konnector-bcu");
    assert_eq!(bcu.last().unwrap()["retryAfterSeconds"], 0, "{bcu:#?}");
    let bcd = hooks("tenants/wl-1", "konnector-bcd");
    assert!(
        bcd.iter().any(|h| h["retryAfterSeconds"].as_u64() > Some(0)),
        "CAPI was never asked to wait for the uninstall: {bcd:#?}"
    );
    assert_eq!(bcd.last().unwrap()["retryAfterSeconds"], 0, "{bcd:#?}");
    assert!(
        stdout.contains("hook [wl-1] konnector-acpi.konnector attempt 1 -> Success"),
        "{stdout}"
    );
    // Without the addon: Success everywhere, never a wait.
    let bcd = hooks("tenants/no-addon", "konnector-bcd");
    assert!(
        !bcd.is_empty() && bcd.iter().all(|h| h["retryAfterSeconds"] == 0),
        "{bcd:#?}"
    );
    // The missing Secret: Failure naming it, CAPI retried, Success once it existed.
    let acpi = hooks("tenants/no-creds", "konnector-acpi");
    assert_eq!(acpi[0]["status"], "Failure", "{acpi:#?}");
    assert!(
        acpi[0]["message"]
            .as_str()
            .unwrap()
            .contains("no-creds-konnector"),
        "{acpi:#?}"
    );
    assert_eq!(acpi.last().unwrap()["status"], "Success", "{acpi:#?}");
    assert!(acpi.len() >= 2);
}

/// The stand-in is there only for the request shapes no served CAPI produces: it refuses the 1.14 shape, and
/// real CAPI refuses a release hack/ensure-capi.sh does not build. Both before starting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capi_flags_refuse_what_does_not_exist() {
    for (args, says) in [
        (
            &["--capi", "stand-in", "--capi-version", "1.14"][..],
            "CAPI 1.14 runs for real",
        ),
        (&["--capi-version", "v1.12.0"][..], "v1.14.2, v1.13.6"),
        (&["--rotate-credentials"][..], "--capi stand-in only"),
    ] {
        let out = sandbox_command(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `konnector-sandbox` with `args`, from the repository root as hack/sandbox.sh runs it, with none of the
/// environment that would change what a person's run prints.
fn sandbox_command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_konnector-sandbox"));
    command
        .args(args)
        .current_dir(tools::repo_root())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .kill_on_drop(true);
    // Every sandbox flag reads a KONNECTOR_SANDBOX_* variable: none may change what a person's run prints.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KONNECTOR_SANDBOX_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a printed command with bash from the repository root, where a person runs hack/sandbox.sh (the sandbox
/// names the CLI, and hack/env.sh, relative to it); returns its stdout, failing the test with its output when it
/// fails.
async fn run_printed(command: &str) -> String {
    let out = tokio::process::Command::new("bash")
        .args(["-c", command])
        .current_dir(tools::repo_root())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "a command the sandbox printed failed: {command}\n{stdout}\n{stderr}"
    );
    stdout
}

/// `konnector-sandbox --keep`, the binary a person runs, on CAPI v1.14.2: one cluster stays installed while the
/// others play their whole lives, and every command printed for the kept cluster works and shows it. kubectl, grpcurl and curl must
/// be on PATH (hack/test.sh installs them; a missing one fails the test rather than skipping it). Ctrl-C then
/// stops everything and the sandbox exits cleanly. What it printed is the README's transcript, once what varies
/// between runs is normalised (`konnector_tests::transcript`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_leaves_one_cluster_installed_and_every_printed_command_works() {
    let printed = keep_and_run_every_printed_command(&[]).await;
    let root = tools::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = std::fs::read_to_string(root.join("hack/sandbox.sh")).unwrap();
    if let Err(drift) = transcript::compare(&readme, &script, "$ ./hack/sandbox.sh --keep", &printed) {
        panic!("{drift}");
    }
}

/// The same on the CAPI stand-in with `--capi-version 1.10`, whose management cluster serves the Cluster at
/// v1beta1 only: the --keep phase reads the kept Cluster to build the hook body it prints, and must read it at the
/// version served (it once asked for v1beta2 and exited 1 with a 404 after the scenario had passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_on_the_stand_in_with_capi_1_10_shape_prints_commands_that_work() {
    keep_and_run_every_printed_command(&["--capi", "stand-in", "--capi-version", "1.10"]).await;
}

/// Runs `konnector-sandbox --keep` with `extra_args` as hack/sandbox.sh runs it (from the repository root, with
/// a temporary state directory), executes every command it prints for the kept cluster and checks what each shows,
/// then interrupts it and expects a clean exit. Returns every line it printed.
async fn keep_and_run_every_printed_command(extra_args: &[&str]) -> Vec<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = ["kubectl", "grpcurl", "curl"]
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not on PATH: `bash hack/ensure-tools.sh grpcurl kubectl` installs them and prints the \
         directory to put on PATH (hack/test.sh does both)"
    );
    // The konnector CLI the sandbox prints commands for: built beside it (cargo test --workspace builds it).
    let sandbox_exe = std::path::Path::new(env!("CARGO_BIN_EXE_konnector-sandbox"));
    let cli = sandbox_exe.with_file_name("konnector");
    assert!(
        cli.is_file(),
        "{} not built: `cargo build -p konnector-cli` builds it (hack/sandbox.sh --keep and cargo test --workspace do)",
        cli.display()
    );
    let mut command = sandbox_command(&["--keep"]);
    command.args(extra_args).stdout(std::process::Stdio::piped());
    let mut sandbox = command.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    tokio::time::timeout(konnector_tests::support::HANG_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line == "press Ctrl-C to stop everything";
            printed.push(line);
            if done {
                return;
            }
        }
        panic!(
            "the sandbox ended before printing its commands:\n{}",
            printed.join("\n")
        );
    })
    .await
    .expect("the sandbox printed its commands");
    let output = printed.join("\n");
    assert!(
        !printed.iter().any(|l| l.starts_with('{')),
        "no JSON summary without --json:\n{output}"
    );
    let state = printed
        .iter()
        .find_map(|l| l.strip_prefix("up: addresses in "))
        .and_then(|f| std::path::Path::new(f).parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| panic!("no state directory in the output:\n{output}"));
    assert!(state.join("summary.json").is_file(), "{output}");
    assert!(state.join("try.sh").is_file(), "{output}");

    let commands: Vec<&str> = printed.iter().filter_map(|l| l.strip_prefix("$ ")).collect();
    assert!(commands.len() >= 8, "{output}");
    let mut seen = Vec::new();
    for command in &commands {
        let stdout = run_printed(command).await;
        let expect = |needle: &str| {
            assert!(
                stdout.contains(needle),
                "{command} does not show {needle:?}:\n{stdout}"
            )
        };
        if command.contains(" status tenants/wl-1 ") {
            // The CLI, through its read-only certificate: the same HelmChartProxy as GetAgentStatus shows.
            expect("konnector-agent-wl-1");
        } else if command.contains(" doctor tenants/wl-1 ") {
            expect("executor reachable");
            if command.contains("--kubeconfig") {
                // Its CAPI-side checks ran against what CAPI itself wrote into the ExtensionConfig.
                expect("Discovered=True");
                expect("caBundle holds the gateway's serving CA");
            }
        } else if command.contains("get extensionconfig") {
            for handler in ["konnector-acpi", "konnector-bcu", "konnector-bcd"] {
                expect(&format!("{handler}.konnector"));
            }
        } else if command.contains("konnector_executor_rpc_requests_total") {
            expect("konnector_executor_rpc_requests_total{method=\"ApplyAgent\",code=\"OK\"}");
        } else if command.contains("konnector_gateway_hook_requests_total") {
            expect("konnector_gateway_hook_requests_total{");
        } else if command.contains("get hcp -A") {
            // The kept cluster's HelmChartProxy, and not the other one's, which was deleted with its Cluster.
            expect("konnector-agent-wl-1");
            assert!(!stdout.contains("konnector-agent-wl-2"), "{stdout}");
        } else if command.contains("get secrets,configmaps") {
            expect("konnector-agent");
        } else if command.contains("GetAgentStatus") {
            expect("konnector-agent-wl-1");
            assert!(
                stdout.contains("\"credentialsCopied\": true")
                    || stdout.contains("\"credentialsCopied\":true"),
                "{stdout}"
            );
        } else if command.contains("PlanAgent") {
            expect("<redacted>");
            expect("konnector-agent-wl-1");
        } else if command.contains("/beforeclusterupgrade/") {
            expect("\"status\":\"Success\"");
        } else if command.contains("/discovery") {
            expect("konnector-bcu");
        } else if command.ends_with(" list") {
            expect("konnector.executor.v1.AgentService");
        }
        seen.push(stdout);
    }
    for kind in [
        "get hcp -A",
        "GetAgentStatus",
        "PlanAgent",
        "/beforeclusterupgrade/",
        " status tenants/wl-1 ",
        " doctor tenants/wl-1 ",
        "konnector_executor_rpc_requests_total",
        "konnector_gateway_hook_requests_total",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(kind)),
            "no {kind} command printed:\n{output}"
        );
    }
    if !extra_args.contains(&"stand-in") {
        // Real CAPI: what CAPI discovered, and doctor reading the CAPI side through the management kubeconfig.
        for kind in ["get extensionconfig", "--kubeconfig="] {
            assert!(
                commands.iter().any(|c| c.contains(kind)),
                "no {kind} command printed:\n{output}"
            );
        }
    }

    // Ctrl-C, as a person would: everything stops and the exit status says the lifecycle passed.
    let pid = sandbox.id().unwrap().to_string();
    let interrupted = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(interrupted.success());
    let mut after = Vec::new();
    let status = tokio::time::timeout(konnector_tests::support::HANG_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            after.push(line);
        }
        sandbox.wait().await.unwrap()
    })
    .await
    .expect("the sandbox stopped after Ctrl-C");
    assert!(status.success(), "the sandbox exited with {status}:\n{output}");
    assert!(
        !state.exists(),
        "the temporary state directory {} outlived the sandbox",
        state.display()
    );
    printed.extend(after);
    printed
}
