#!/usr/bin/env bash
# Runs konnector's benchmark (release build) against real control planes on loopback; prints p50/p90 per path and
# the ratios between them. Arguments go to konnector-bench (try --rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBEBUILDER_ASSETS="$(bash hack/ensure-control-plane.sh)"
export KUBEBUILDER_ASSETS
exec cargo run --quiet --release --locked -p konnector-tests --bin konnector-bench -- "$@"
