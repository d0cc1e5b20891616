#!/usr/bin/env bash
# konnector's whole test suite: installs what it needs, then runs the format check, clippy, buf lint and every
# test in the workspace, including the ones against real kube-apiservers. Any failure fails the command.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "control-plane binaries (etcd, kube-apiserver)"
KUBEBUILDER_ASSETS="$(bash hack/ensure-control-plane.sh)"
export KUBEBUILDER_ASSETS
"$KUBEBUILDER_ASSETS/kube-apiserver" --version
"$KUBEBUILDER_ASSETS/etcd" --version | awk 'NR == 1'

step "Go toolchain (golang-go) for the text/template differential test"
# tests/tests/template_differential.rs builds tests/go/render with Go's own text/template. ensure-control-plane.sh
# pulls golang-go in too, but only while it builds kube-apiserver; this test needs it on its own.
if ! command -v go >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends golang-go
fi
go version

step "promtool (Debian's prometheus package) for the metrics and alert-rule tests"
# tests/tests/operator_prometheus.rs runs promtool check metrics on both binaries' /metrics, and promtool check rules
# and test rules on the chart's PrometheusRule. Only promtool is used; the package's own server is not started.
if ! command -v promtool >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi
promtool --version 2>&1 | awk 'NR == 1'

step "developer tools (buf, helm, grpcurl, kubectl, cargo-deny)"
# grpcurl and kubectl run the commands the README and the sandbox print (executor_grpcurl.rs, sandbox_lifecycle.rs).
PATH="$(bash hack/ensure-tools.sh helm buf grpcurl kubectl cargo-deny):$PATH"
export PATH

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "buf lint"
buf lint

step "cargo deny (licenses, bans, sources; deny.toml)"
# Advisories are not checked here: they need the RustSec database from GitHub, which is not reachable (deny.toml).
cargo deny check licenses bans sources

step "static release binaries for the images (hack/build-static.sh)"
KONNECTOR_STATIC_BIN_DIR="$(bash hack/build-static.sh)"
export KONNECTOR_STATIC_BIN_DIR

step "cargo test (unit, router and real-apiserver tests)"
# Each real-apiserver test starts its own control planes; two at a time keeps a 2-core machine responsive.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked -- --test-threads="${KONNECTOR_TEST_THREADS:-2}" 2>&1 | tee "$log"

step "all checks passed"
# One closing line for the whole workspace (cargo prints one per test binary, the last ones for doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
