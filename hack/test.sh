#!/usr/bin/env bash
# konnector's whole test suite: installs what it needs, then runs the format check, clippy, buf lint and every
# test in the workspace, including the ones against real kube-apiservers. Any failure fails the command.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

# Incremental compilation caches one copy of every workspace crate per test binary: GBs that only an edit-compile
# loop uses, and the suite once ran a CI machine out of disk. A whole-suite run compiles each crate once.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Free space is printed at the start and the end, so a run that fails for disk says so next to its first line.
disk() { df -h --output=avail,target "${CARGO_TARGET_DIR:-target}" 2>/dev/null | awk 'NR == 2 { print "free disk: " $1 " on " $2 }' || true; }
mkdir -p "${CARGO_TARGET_DIR:-target}"
disk

step "Go toolchain (1.26 or newer) for the upstream builds and the text/template differential test"
# hack/upstream/go-env.sh uses the machine's Go when it is new enough, else takes Go from the Go module proxy.
# gotemplate/tests/template_differential.rs and tests/tests/caaph_rendering.rs build gotemplate/tests/go/render with
# it, so the reference is today's text/template.
# shellcheck source=upstream/go-env.sh
. hack/upstream/go-env.sh
go version

step "control-plane binaries (etcd, kube-apiserver; built from their Go modules once, then cached)"
KUBEBUILDER_ASSETS="$(bash hack/ensure-control-plane.sh)"
export KUBEBUILDER_ASSETS
"$KUBEBUILDER_ASSETS/kube-apiserver" --version
"$KUBEBUILDER_ASSETS/etcd" --version | awk 'NR == 1'

step "CAPI's CRDs from sigs.k8s.io/cluster-api (hack/ensure-crds.sh)"
KONNECTOR_CRDS="$(bash hack/ensure-crds.sh)"
export KONNECTOR_CRDS
cat "$KONNECTOR_CRDS"/*/VERSION

step "CAPI's core manager, built from sigs.k8s.io/cluster-api (hack/ensure-capi.sh; cached per release)"
# tests/tests/capi_real.rs runs it: every hook there comes from CAPI itself. Cold: 8 min (v1.14.2) and 16 min (v1.13.6)
# measured on 2 cores shared under a load of about 20; warm: nothing. 1.10 and 1.12 are not served by the module proxy (the CAPI stand-in keeps them).
for release in v1.14.2 v1.13.6; do
  cat "$(bash hack/ensure-capi.sh "$release")/VERSION"
done

step "promtool (Debian's prometheus package) for the metrics and alert-rule tests"
# tests/tests/operator_prometheus.rs runs promtool check metrics on both binaries' /metrics, and promtool check rules
# and test rules on the chart's PrometheusRule. Only promtool is used; the package's own server is not started.
if ! command -v promtool >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi
promtool --version 2>&1 | awk 'NR == 1'

step "developer tools (buf, helm, grpcurl, kubectl, cargo-deny, skopeo, actionlint)"
# grpcurl and kubectl run the commands docs/reference.md and the sandbox print (executor_grpcurl.rs, sandbox_lifecycle.rs);
# skopeo reads the images hack/build-images.sh writes and actionlint lints the release workflow (release_images.rs).
PATH="$(bash hack/ensure-tools.sh helm buf grpcurl kubectl cargo-deny skopeo actionlint):$PATH"
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
# --no-fail-fast: a failing test binary does not hide the results of the ones after it; the run still fails.
cargo test --workspace --locked --no-fail-fast -- --test-threads="${KONNECTOR_TEST_THREADS:-2}" 2>&1 | tee "$log"

step "all checks passed"
disk
# One closing line for the whole workspace (cargo prints one per test binary, the last ones for doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
