#!/usr/bin/env bash
# Builds fully static release binaries of konnector-gateway and konnector-executor (glibc with crt-static; glibc
# >= 2.34 resolves names without loading NSS modules) and prints the directory holding them. The Dockerfile and
# hack/build-images.sh use this same script, and tests/tests/deploy_static.rs checks its output has no interpreter
# and no shared-library dependency, so what the images carry is what the test checked.
#
# Environment (all optional; the defaults are what the tests and the Dockerfile use):
#   KONNECTOR_STATIC_TARGET      Rust target triple (default: this machine's). Another architecture cross-builds: for
#                                aarch64-unknown-linux-gnu on x86_64 that needs Debian's gcc-aarch64-linux-gnu and
#                                libc6-dev-arm64-cross and `rustup target add aarch64-unknown-linux-gnu`.
#   KONNECTOR_STATIC_PACKAGES    the packages to build (default: konnector-gateway konnector-executor; the release
#                                workflow adds konnector-cli for the CLI's artefacts).
#   KONNECTOR_AUDITABLE=1        build with `cargo auditable` (the release workflow), which embeds the dependency
#                                list in the binaries for scanners (syft, trivy, cargo audit bin).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${KONNECTOR_STATIC_TARGET_DIR:-$PWD/target/static}"
target="${KONNECTOR_STATIC_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}"
read -r -a packages <<<"${KONNECTOR_STATIC_PACKAGES:-konnector-gateway konnector-executor}"
pkg_args=()
for p in "${packages[@]}"; do pkg_args+=(-p "$p"); done
build=(cargo build)
[[ ${KONNECTOR_AUDITABLE:-0} == 1 ]] && build=(cargo auditable build)
if [[ $target == aarch64-unknown-linux-gnu && $(uname -m) != aarch64 ]]; then
  # Cross: Debian's cross gcc links, and compiles ring's C and assembly.
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
  export CC_aarch64_unknown_linux_gnu="${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}"
  export AR_aarch64_unknown_linux_gnu="${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}"
fi
RUSTFLAGS="-C target-feature=+crt-static" "${build[@]}" --release --locked \
  --target "$target" --target-dir "$target_dir" "${pkg_args[@]}" >&2
echo "$target_dir/$target/release"
