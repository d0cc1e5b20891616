#!/usr/bin/env bash
# Builds fully static release binaries of konnector-gateway and konnector-executor (glibc with crt-static; glibc
# >= 2.34 resolves names without loading NSS modules) and prints the directory holding them. The Dockerfile runs
# this same script, and tests/tests/deploy_static.rs checks its output has no interpreter and no shared-library
# dependency, so what the image copies is what the test checked.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${KONNECTOR_STATIC_TARGET_DIR:-$PWD/target/static}"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
  --target x86_64-unknown-linux-gnu --target-dir "$target_dir" \
  -p konnector-gateway -p konnector-executor >&2
echo "$target_dir/x86_64-unknown-linux-gnu/release"
