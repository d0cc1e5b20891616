#!/usr/bin/env bash
# Runs konnector's benchmarks (release builds) against real control planes on loopback.
#   ./hack/bench.sh --rounds 60                      latency ratios of one re-apply, three ways
#   ./hack/bench.sh --clusters 1000 --concurrency 64 the scale benchmark, beside the minimal and CAREN-like paths
# Arguments go to konnector-bench (try --help). The scale benchmark runs the same static release binaries the images
# copy (hack/build-static.sh), as separate processes, so their memory and CPU are measured on their own.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBEBUILDER_ASSETS="$(bash hack/ensure-control-plane.sh)"
export KUBEBUILDER_ASSETS
if [[ " $* " == *" --clusters"* ]]; then
  echo "building the release binaries (hack/build-static.sh)..." >&2
  KONNECTOR_STATIC_BIN_DIR="$(bash hack/build-static.sh)"
  export KONNECTOR_STATIC_BIN_DIR
fi
echo "building konnector-bench (release)..." >&2
cargo build --release --locked -p konnector-tests --bin konnector-bench >&2
exec target/release/konnector-bench "$@"
