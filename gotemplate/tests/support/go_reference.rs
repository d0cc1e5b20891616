//! The Go reference program (`gotemplate/tests/go/render`): building it with the machine's Go and running it.
//!
//! Shared by konnector-gotemplate's differential test and by konnector-tests' CAAPH test (which includes this
//! file with `#[path]`), so both build and call the one program the same way. Paths are taken from this crate's
//! place in the workspace, which works from either crate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The reference program's sources, from whichever workspace crate includes this file.
const RENDER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../gotemplate/tests/go/render");

/// The oldest Go whose `text/template` the reference may be: CAREN and CAAPH are built with Go 1.25 or later, and
/// this machine kind has Go 1.26. An older Go would silently compare against older semantics (Go 1.19 refuses
/// `{{else with}}` and `range` over an integer), so it fails the test instead.
const MIN_GO: (u32, u32) = (1, 26);

/// `go1.26.8` -> (1, 26).
fn go_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version
        .trim()
        .strip_prefix("go")?
        .split(['.', 'r', 'b', '-', ' ']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Builds the reference program into `dir` with the machine's Go, after checking that it is at least
/// [`MIN_GO`]. The program depends on Sprig (pinned in go.mod/go.sum), fetched through the Go module proxy into
/// the shared module cache on a first run.
pub(crate) fn build_go_renderer(dir: &Path) -> PathBuf {
    let version = Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
        .expect("running `go` (Go 1.26 or later must be on PATH; hack/upstream/go-env.sh provides it)");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    eprintln!("reference Go: {version}");
    let minor = go_minor(&version).unwrap_or_else(|| panic!("unrecognised `go env GOVERSION`: {version:?}"));
    assert!(
        minor >= MIN_GO,
        "the reference Go is {version}, older than go{}.{}: put Go 1.26 or later on PATH (hack/upstream/go-env.sh)",
        MIN_GO.0,
        MIN_GO.1
    );
    let bin = dir.join("render");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(RENDER_DIR)
        // go.sum pins every module; the build may download them but never changes go.mod. GOTOOLCHAIN=local: the
        // version checked above is the one that builds, never a toolchain the go command would fetch.
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("running `go build`");
    assert!(
        out.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The binary says which Go it was built with: the one checked, not another on a different PATH entry.
    let built = Command::new(&bin).arg("-version").output().unwrap();
    let built = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    assert_eq!(go_minor(&built), Some(minor), "reference built with {built}");
    bin
}

/// Renders values templates with Go's text/template as CAREN does; `requests` is a JSON array of
/// `{"template": string, "values": {<variable>: value}}`.
pub(crate) fn go_render(bin: &Path, requests: &Value) -> Vec<Result<String, String>> {
    go_render_mode(bin, &[], requests)
}

/// Runs the reference program with `args` (`-caaph` for CAAPH's rendering) over `requests`: one result each,
/// the rendered text or Go's error text.
pub(crate) fn go_render_mode(bin: &Path, args: &[&str], requests: &Value) -> Vec<Result<String, String>> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(requests.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| {
            let text = r["out"].as_str().unwrap().to_owned();
            if r["ok"].as_bool().unwrap() {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .collect()
}
