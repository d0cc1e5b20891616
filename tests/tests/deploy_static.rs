//! The images in deploy/docker/Dockerfile copy what hack/build-static.sh builds onto a base with no libc. This
//! checks that those binaries are really static: no ELF interpreter and no shared-library dependency.
//!
//! hack/test.sh builds them before `cargo test` and passes the directory in `KONNECTOR_STATIC_BIN_DIR`; run on
//! its own, the test builds them itself.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn static_bin_dir() -> PathBuf {
    konnector_tests::tools::static_bin_dir().unwrap()
}

fn readelf(flag: &str, bin: &Path) -> String {
    let out = Command::new("readelf")
        .arg(flag)
        .arg("--wide")
        .arg(bin)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf {flag} {} failed", bin.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn image_binaries_are_static() {
    let dir = static_bin_dir();
    for name in ["konnector-gateway", "konnector-executor"] {
        let bin = dir.join(name);
        assert!(bin.is_file(), "{} was not built", bin.display());
        let headers = readelf("--program-headers", &bin);
        assert!(
            headers.contains("LOAD"),
            "{name}: not an ELF executable?\n{headers}"
        );
        assert!(
            !headers.contains("INTERP"),
            "{name} asks for a dynamic loader:\n{headers}"
        );
        let dynamic = readelf("--dynamic", &bin);
        assert!(
            !dynamic.contains("(NEEDED)"),
            "{name} needs shared libraries:\n{dynamic}"
        );
    }
}
