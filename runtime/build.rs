//! Records the git revision the binaries are built from, for `--version` and the `service.version` resource
//! attribute. `KONNECTOR_GIT_REVISION` in the build environment wins (an image build without `.git`); outside a git
//! checkout, or without git, the revision is "unknown" rather than a build failure.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=KONNECTOR_GIT_REVISION");
    let revision = std::env::var("KONNECTOR_GIT_REVISION")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KONNECTOR_GIT_REVISION={revision}");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the ref it points to (a commit). In a worktree these
    // live in different directories, which `git rev-parse --git-path` resolves.
    // (Not the index: rebuilding every crate on each `git add` costs more than a "-dirty" suffix is worth.)
    for path in git(&["rev-parse", "--git-path", "HEAD"])
        .into_iter()
        .chain(git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])))
    {
        let path = std::path::Path::new(&path);
        let path = if path.is_relative() {
            std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(path)
        } else {
            path.to_path_buf()
        };
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
