#!/usr/bin/env bash
# Runs the konnector sandbox: real control planes on loopback, CAPI's own core manager, konnector itself, and
# cluster lives that CAPI drives. Arguments are passed to konnector-sandbox (try --help). Every phase says what it
# does, because the first run builds kube-apiserver, CAPI and konnector and takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "==> $*" >&2; }

# The sandbox itself needs only helm (to render the chart); the commands --keep prints use grpcurl and kubectl.
# The konnector CLI too: --keep prints `konnector status` and `konnector doctor` against the sandbox's executor.
tools=(helm)
bins=(-p konnector-tests --bin konnector-sandbox)
# CAPI runs for real unless --capi stand-in says otherwise; --capi-version picks the release (the binary checks it).
capi=${KONNECTOR_SANDBOX_CAPI:-real} capi_version=${KONNECTOR_SANDBOX_CAPI_VERSION:-v1.14.2} prev=
for arg in "$@"; do
  case "$prev" in --capi) capi=$arg ;; --capi-version) capi_version=$arg ;; esac
  case "$arg" in
    --keep) tools+=(grpcurl kubectl); bins+=(-p konnector-cli --bin konnector) ;;
    --capi=*) capi=${arg#--capi=} ;;
    --capi-version=*) capi_version=${arg#--capi-version=} ;;
  esac
  prev=$arg
done

say "control-plane binaries: etcd and kube-apiserver, built from their Go modules (first run: about 12 minutes on 2 cores; cached after it; \$KUBEBUILDER_ASSETS wins when set)"
KUBEBUILDER_ASSETS="$(bash hack/ensure-control-plane.sh)"
export KUBEBUILDER_ASSETS
# Shown under ~ when it is there: the output is pasted into the README, where a home directory means nothing.
say "using ${KUBEBUILDER_ASSETS/#"$HOME"/"~"}"

say "CAPI's CRDs from the sigs.k8s.io/cluster-api Go module (cached after the first run)"
KONNECTOR_CRDS="$(bash hack/ensure-crds.sh)"
export KONNECTOR_CRDS

if [[ "$capi" == real ]]; then
  say "CAPI's core manager $capi_version, built from the sigs.k8s.io/cluster-api Go module (first run: about 8 minutes on 2 cores; cached after it)"
  capi_dir="$(bash hack/ensure-capi.sh "$capi_version")"
  say "using ${capi_dir/#"$HOME"/"~"}"
fi

say "developer tools: ${tools[*]}"
tools_bin="$(bash hack/ensure-tools.sh "${tools[@]}")"
export PATH="$tools_bin:$PATH"

say "building konnector-sandbox (cargo build; a few minutes the first time)"
cargo build --locked "${bins[@]}"
say "starting konnector-sandbox $*"
exec "${CARGO_TARGET_DIR:-target}/debug/konnector-sandbox" "$@"
