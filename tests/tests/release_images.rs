//! The release artefacts. hack/build-images.sh writes the images of both binaries as OCI layouts without a
//! container daemon; built twice from the same static binaries they are byte for byte the same, a real OCI tool
//! (skopeo) reads them, and the binary unpacked from the layer reports the revision the image's label names. The
//! chart's default image repositories are what the release workflow publishes, and actionlint accepts the workflow.
//!
//! hack/test.sh builds the static binaries first and passes `KONNECTOR_STATIC_BIN_DIR`; skopeo and actionlint come
//! from hack/ensure-tools.sh (Debian's skopeo; actionlint built from its Go module), installed here on first use.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use konnector_tests::tools;
use serde_json::Value;

const IMAGES: [&str; 2] = ["konnector-gateway", "konnector-executor"];

/// Runs `cmd`, fails the test with its stderr unless it succeeds, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `name` as hack/ensure-tools.sh installs it: in the directory it prints, else on PATH (Debian's packages).
fn tool(name: &str) -> PathBuf {
    let dir = run(Command::new("bash")
        .arg(tools::repo_root().join("hack/ensure-tools.sh"))
        .arg(name));
    let linked = Path::new(dir.trim()).join(name);
    if linked.exists() {
        linked
    } else {
        PathBuf::from(name)
    }
}

fn chart_app_version() -> String {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(tools::chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}

/// Builds the images into `out`; returns each image's index digest, as index.json names it.
fn build_images(out: &Path, bins: &Path) -> Vec<String> {
    let printed = run(Command::new("bash")
        .arg(tools::repo_root().join("hack/build-images.sh"))
        .arg(out)
        .env("KONNECTOR_STATIC_BIN_DIR", bins)
        .env_remove("KONNECTOR_IMAGE_BINARIES")
        .env_remove("KONNECTOR_GIT_REVISION")
        .env_remove("SOURCE_DATE_EPOCH"));
    assert_eq!(Path::new(printed.trim()), out);
    IMAGES
        .iter()
        .map(|name| {
            let index: Value =
                serde_json::from_slice(&std::fs::read(out.join(name).join("index.json")).unwrap()).unwrap();
            assert_eq!(
                index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
                chart_app_version()
            );
            index["manifests"][0]["digest"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The ports each Dockerfile target declares, in stage order (gateway, executor): the images declare the same.
fn dockerfile_ports() -> Vec<Vec<String>> {
    std::fs::read_to_string(tools::repo_root().join("deploy/docker/Dockerfile"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .map(|ports| ports.split_whitespace().map(|p| format!("{p}/tcp")).collect())
        .collect()
}

#[test]
fn images_are_reproducible_and_skopeo_reads_them() {
    let bins = tools::static_bin_dir().unwrap();
    let skopeo = tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let first = build_images(&a, &bins);
    let second = build_images(&b, &bins);
    assert_eq!(first, second, "two builds from the same binaries differ");
    for name in IMAGES {
        assert_eq!(
            files_under(&a.join(name).join("blobs/sha256")),
            files_under(&b.join(name).join("blobs/sha256"))
        );
    }

    let tag = chart_app_version();
    let head = run(Command::new("git")
        .arg("-C")
        .arg(tools::repo_root())
        .args(["rev-parse", "HEAD"]));
    let head = head.trim();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for (name, ports) in IMAGES.into_iter().zip(dockerfile_ports()) {
        let reference = format!("oci:{}:{tag}", a.join(name).display());
        let inspect: Value =
            serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &reference]))).unwrap();
        assert_eq!(inspect["Os"], "linux", "{inspect:#}");
        assert_eq!(inspect["Architecture"], arch, "{inspect:#}");
        let labels = &inspect["Labels"];
        assert_eq!(labels["org.opencontainers.image.revision"], head, "{inspect:#}");
        assert_eq!(labels["org.opencontainers.image.version"], tag.as_str());
        assert_eq!(labels["org.opencontainers.image.title"], name);
        assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);

        let config: Value = serde_json::from_str(&run(
            Command::new(&skopeo).args(["inspect", "--config", &reference])
        ))
        .unwrap();
        assert_eq!(config["config"]["User"], "65532:65532", "{config:#}");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!([format!("/{name}")])
        );
        let exposed: Vec<String> = config["config"]["ExposedPorts"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut expected = ports.clone();
        expected.sort();
        assert_eq!(
            exposed, expected,
            "{name} declares other ports than its Dockerfile target"
        );

        // Out of the layout as skopeo copies it, and out of the layer as a runtime unpacks it (GNU tar).
        let copied = tmp.path().join(format!("{name}.dir"));
        run(Command::new(&skopeo).args(["copy", "-q", &reference, &format!("dir:{}", copied.display())]));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(copied.join("manifest.json")).unwrap()).unwrap();
        let layer = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_owned();
        let rootfs = tmp.path().join(format!("{name}.rootfs"));
        std::fs::create_dir(&rootfs).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(copied.join(layer))
            .arg("-C")
            .arg(&rootfs));
        assert_eq!(
            std::fs::read(rootfs.join(name)).unwrap(),
            std::fs::read(bins.join(name)).unwrap(),
            "{name} in the image is not the static binary"
        );
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
        assert!(rootfs.join("tmp").is_dir());

        // The binary the image runs says which commit it is, and that is the commit the label names (runtime/build.rs
        // records the label's first 12 hex digits).
        let version = run(Command::new(rootfs.join(name)).arg("--version"));
        assert!(!version.contains("unknown"), "{name} --version: {version}");
        assert!(
            version.contains(&format!("+{}", &head[..12])),
            "{name} --version: {version}, HEAD {head}"
        );
    }
}

#[test]
fn the_charts_default_images_are_what_the_workflow_publishes() {
    let root = tools::repo_root();
    let workflow: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join(".github/workflows/release.yaml")).unwrap(),
    )
    .unwrap();
    let prefix = workflow["env"]["IMAGE_PREFIX"]
        .as_str()
        .expect("the workflow names IMAGE_PREFIX");
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(tools::chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    for (key, name) in [
        ("gateway", "konnector-gateway"),
        ("executor", "konnector-executor"),
    ] {
        assert_eq!(
            values["image"][key]["repository"],
            format!("{prefix}/{name}"),
            "image.{key}.repository"
        );
        // An empty tag is the chart's appVersion, which the workflow's version job checks against the git tag, and
        // which hack/build-images.sh tags the layouts with.
        assert_eq!(values["image"][key]["tag"], "", "image.{key}.tag");
    }

    // The images job publishes each layout under $IMAGE_PREFIX/<name>:$VERSION, every architecture of the index.
    let steps = workflow["jobs"]["images"]["steps"].as_array().unwrap();
    let publish = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("skopeo copy"))
        .expect("the images job copies the layouts with skopeo");
    assert!(publish.contains("--all"), "{publish}");
    assert!(
        publish.contains("docker://$IMAGE_PREFIX/$image:$VERSION"),
        "{publish}"
    );
    assert!(
        publish.contains("for image in konnector-gateway konnector-executor"),
        "{publish}"
    );
    let archs: BTreeSet<&str> = workflow["jobs"]["binaries"]["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["arch"].as_str().unwrap())
        .collect();
    assert_eq!(archs, BTreeSet::from(["amd64", "arm64"]));
}

#[test]
fn actionlint_accepts_the_workflows() {
    let actionlint = tool("actionlint");
    let dir = tools::repo_root().join(".github/workflows");
    let workflows: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!workflows.is_empty());
    // With shellcheck on PATH (ensure-tools installs it with actionlint), the `run:` scripts are checked too.
    let out = Command::new(&actionlint)
        .arg("-color=false")
        .args(&workflows)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // actionlint skips shell checks silently when shellcheck is missing: make sure it is not.
    run(Command::new("shellcheck").arg("--version"));
}

/// A tag can be moved to other code by whoever controls the action's repository; a commit cannot. Every `uses:` in
/// every workflow names a full commit, with the tag it was taken from as a comment for people and update tools.
#[test]
fn every_action_is_pinned_by_commit() {
    let dir = tools::repo_root().join(".github/workflows");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let Some((_, used)) = line.split_once("uses:") else {
                continue;
            };
            let used = used.trim();
            // A local action (./path) or a container (docker://) is not fetched by tag.
            if used.starts_with("./") || used.starts_with("docker://") {
                continue;
            }
            let (action, rest) = used
                .split_once('@')
                .unwrap_or_else(|| panic!("{}: {used} names no version", path.display()));
            let (pin, comment) = rest.split_once(" # ").unwrap_or((rest, ""));
            assert!(
                pin.len() == 40 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: {action}@{pin} is not pinned by a full commit",
                path.display()
            );
            assert!(
                comment.starts_with('v'),
                "{}: {action}@{pin} does not say which tag the commit is",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no `uses:` found under {}", dir.display());
}

#[test]
fn the_krew_manifest_names_the_archives_the_workflow_publishes() {
    let root = tools::repo_root();
    let template = std::fs::read_to_string(root.join("deploy/krew/konnector.yaml")).unwrap();
    let version = chart_app_version();
    let (amd64, arm64) = ("a".repeat(64), "b".repeat(64));
    // What the workflow's envsubst does.
    let manifest = template
        .replace("${VERSION}", &version)
        .replace("${SHA256_LINUX_AMD64}", &amd64)
        .replace("${SHA256_LINUX_ARM64}", &arm64);
    assert!(
        !manifest.contains("${"),
        "a placeholder the workflow does not fill:\n{manifest}"
    );
    let plugin: Value = serde_yaml_ng::from_str(&manifest).unwrap();
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(plugin["spec"]["version"], format!("v{version}"));

    let workflow = std::fs::read_to_string(root.join(".github/workflows/release.yaml")).unwrap();
    assert!(workflow.contains(r#""dist/cli/konnector-$VERSION-linux-${{ matrix.arch }}.tar.gz""#));
    assert!(
        workflow.contains("konnector kubectl-konnector"),
        "the archive holds kubectl-konnector"
    );
    let platforms = plugin["spec"]["platforms"].as_array().unwrap();
    let mut archs = BTreeSet::new();
    for p in platforms {
        let arch = p["selector"]["matchLabels"]["arch"].as_str().unwrap();
        archs.insert(arch.to_owned());
        assert_eq!(p["selector"]["matchLabels"]["os"], "linux");
        assert_eq!(
            p["uri"],
            format!(
                "https://github.com/konnector/konnector/releases/download/v{version}/konnector-{version}-linux-{arch}.tar.gz"
            )
        );
        assert_eq!(
            p["sha256"],
            if arch == "amd64" { &amd64 } else { &arm64 }.as_str()
        );
        assert_eq!(p["bin"], "kubectl-konnector");
        assert_eq!(p["files"][0]["from"], "kubectl-konnector");
    }
    assert_eq!(archs, BTreeSet::from(["amd64".to_owned(), "arm64".to_owned()]));
    // The binary is what the CLI crate builds under that name.
    let cli = std::fs::read_to_string(root.join("cli/Cargo.toml")).unwrap();
    assert!(cli.contains("name = \"kubectl-konnector\""));
}

#[test]
fn single_architecture_images_pin_their_pods_to_that_architecture() {
    // The chart as the harness's API server would get it; no API server is needed to render.
    let arch_of = |sets: &[&str]| -> Vec<Value> {
        let docs = tools::render_chart_for(
            "v1.37.2",
            "konnector-system",
            sets,
            &["templates/gateway.yaml", "templates/executor.yaml"],
        )
        .unwrap();
        docs.iter()
            .filter(|d| d["kind"] == "Deployment")
            .map(|d| d["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"].clone())
            .collect()
    };
    // The release's images hold both architectures: no selector.
    assert_eq!(arch_of(&[]), [Value::Null, Value::Null]);
    // An image of one architecture: both Deployments are pinned to it.
    assert_eq!(arch_of(&["image.architectures={arm64}"]), ["arm64", "arm64"]);
    // The operator's own nodeSelector wins.
    assert_eq!(
        arch_of(&[
            "image.architectures={amd64}",
            "gateway.nodeSelector.kubernetes\\.io/arch=arm64"
        ]),
        ["arm64", "amd64"]
    );
    // The schema refuses an architecture no image is built for.
    assert!(
        tools::render_chart_for(
            "v1.37.2",
            "konnector-system",
            &["image.architectures={x86_64}"],
            &[]
        )
        .is_err()
    );
}
