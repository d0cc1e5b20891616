#!/usr/bin/env bash
# Runs the konnector sandbox: real control planes on loopback, konnector itself, and a scripted cluster lifecycle.
# Arguments are passed to konnector-sandbox (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBEBUILDER_ASSETS="$(bash hack/ensure-control-plane.sh)"
export KUBEBUILDER_ASSETS
exec cargo run --quiet --locked -p konnector-tests --bin konnector-sandbox -- "$@"
