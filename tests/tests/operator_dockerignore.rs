//! The image build's context: `.dockerignore` keeps build output, the developer tools and git history out of
//! `docker build -f deploy/docker/Dockerfile .`, and excludes nothing the Dockerfile copies, i.e. no file of the
//! repository itself (its `COPY . .` takes the whole context, and hack/build-static.sh builds from it).
//!
//! The matching follows Docker's rules for the patterns the file uses: paths relative to the context root, `*` and
//! `?` within one path segment, `**` across any number of segments, a trailing `/` ignored, and a path excluded when
//! it or one of its parent directories matches.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use konnector_tests::tools;

/// The patterns of `.dockerignore`, comments and blank lines dropped.
fn patterns(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join(".dockerignore"))
        .expect("the repository has a .dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
        .collect()
}

/// `*` and `?` within one segment.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name) || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// A whole path against a whole pattern, segment by segment, `**` standing for any number of segments.
fn path_matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            path_matches(&pattern[1..], path) || (!path.is_empty() && path_matches(pattern, &path[1..]))
        }
        (Some(p), Some(n)) => {
            segment_matches(p.as_bytes(), n.as_bytes()) && path_matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Whether `path` (relative, `/`-separated) is left out of the context by `patterns`.
fn excluded(patterns: &[String], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    patterns.iter().any(|p| {
        let pattern: Vec<&str> = p.split('/').collect();
        (1..=segments.len()).any(|n| path_matches(&pattern, &segments[..n]))
    })
}

#[test]
fn the_matcher_follows_dockers_rules() {
    let p = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let patterns = p(&["target", "**/target", "hack/tools/node_modules", "*.log", ".git"]);
    assert!(excluded(&patterns, "target/debug/konnector-gateway"));
    assert!(excluded(&patterns, "tests/target/x"));
    assert!(excluded(&patterns, "hack/tools/node_modules/.bin/helm"));
    assert!(excluded(&patterns, "build.log"));
    assert!(excluded(&patterns, ".git"));
    assert!(!excluded(&patterns, "hack/tools/package.json"));
    assert!(!excluded(&patterns, "runtime/src/targets.rs"));
    assert!(!excluded(&patterns, "hack/build.log"), "* does not cross /");
    assert!(!excluded(&patterns, ".gitignore"));
}

#[test]
fn the_image_context_leaves_out_tools_and_output_and_keeps_every_source() {
    let root = tools::repo_root();
    let patterns = patterns(&root);
    assert!(
        patterns.iter().all(|p| !p.starts_with('!')),
        "re-inclusions make the context harder to reason about: {patterns:?}"
    );
    for heavy in [
        "target/debug/konnector-gateway",
        "hack/tools/node_modules/.bin/helm",
        "hack/tools/cargo/bin/cargo-deny",
        ".git/HEAD",
    ] {
        assert!(
            excluded(&patterns, heavy),
            "{heavy} would be sent to the Docker daemon"
        );
    }

    // The Dockerfile copies the whole context (`COPY . .`) and builds with hack/build-static.sh: every file the
    // repository tracks must be in it. Copies between stages (`--from=`) do not read the context.
    let dockerfile = std::fs::read_to_string(root.join("deploy/docker/Dockerfile")).unwrap();
    let sources: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|args| !args.contains("--from="))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert_eq!(
        sources,
        ["."],
        "the Dockerfile's context copies changed; revisit this test"
    );
    let tracked = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git runs");
    assert!(tracked.status.success());
    let tracked: Vec<String> = String::from_utf8(tracked.stdout)
        .unwrap()
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(tracked.len() > 50, "{} tracked files?", tracked.len());
    let lost: Vec<&String> = tracked.iter().filter(|f| excluded(&patterns, f)).collect();
    assert!(
        lost.is_empty(),
        ".dockerignore leaves tracked files out of the image build: {lost:?}"
    );
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "hack/build-static.sh",
        "proto/konnector/executor/v1/executor.proto",
    ] {
        assert!(
            tracked.iter().any(|f| f == needed) && !excluded(&patterns, needed),
            "{needed}"
        );
    }

    // What the context weighs now, against everything in the checkout (shown with --nocapture).
    let (mut kept, mut total) = (0u64, 0u64);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let rel = rel.join(entry.file_name());
            let name = rel.to_string_lossy().into_owned();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(rel);
            } else {
                total += meta.len();
                if !excluded(&patterns, &name) {
                    kept += meta.len();
                }
            }
        }
    }
    println!(
        "build context: {:.1} MiB of {:.1} MiB in the checkout",
        kept as f64 / 1048576.0,
        total as f64 / 1048576.0
    );
}
