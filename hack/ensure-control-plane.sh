#!/usr/bin/env bash
# Ensures the control-plane binaries the tests and the sandbox run exist, and prints the directory that holds them
# (the KUBEBUILDER_ASSETS convention) as the last line of stdout:
#   kube-apiserver  built from the k8s.io/kubernetes Go module (hack/upstream/kubernetes/go.mod pins the release);
#   etcd            built from the go.etcd.io/etcd/server/v3 Go module (hack/upstream/etcd/go.mod pins the release).
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS, if it already holds both binaries;
#   2. the per-user cache, keyed by both versions (~/.cache/konnector/control-plane-<k8s>-etcd-<etcd>);
#   3. a fresh build with the machine's Go (1.26 or newer), modules from the Go module proxy, checked against the
#      go.sum files committed beside each go.mod.
#
# Builds share the user's one Go build cache, happen in a scratch directory and are moved into the cache with one
# rename, so an interrupted or failed build never leaves a half-written binary behind. A lock serialises callers.
set -euo pipefail
cd "$(dirname "$0")/upstream"

# The pinned versions are read from the go.mod files, so there is one place to change them.
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' kubernetes/go.mod)
ETCD_VERSION=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" { print $3 }' etcd/go.mod)
# Bumped when the way the binaries are built changes, so old caches are not reused.
RECIPE=1

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/etcd" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/konnector"
ASSETS="$CACHE_ROOT/control-plane-$K8S_VERSION-etcd-$ETCD_VERSION-r$RECIPE"
mkdir -p "$CACHE_ROOT"

log() { echo "ensure-control-plane: $*" >&2; }
have_assets() { [[ -x "$ASSETS/etcd" && -x "$ASSETS/kube-apiserver" ]]; }

if have_assets; then echo "$ASSETS"; exit 0; fi

exec 9>"$CACHE_ROOT/.lock"
flock 9
if have_assets; then echo "$ASSETS"; exit 0; fi

# shellcheck source=go-env.sh
. ./go-env.sh

STAGE=$(mktemp -d "$CACHE_ROOT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
# The apiserver reports its version from these variables; CAPI refuses management clusters whose version it cannot
# parse or does not support, so an unstamped v0.0.0 build would not do.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

started=$SECONDS
log "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3 (first run: about 2 minutes on 2 cores)"
(cd etcd && go build -trimpath -ldflags "-s -w" -o "$STAGE/out/etcd" .) >&2
log "etcd built ($((SECONDS - started))s); building kube-apiserver $K8S_VERSION from k8s.io/kubernetes" \
    "(first run: about 10 minutes on 2 cores, most of it compiling; later builds reuse Go's build cache)"
(cd kubernetes && go build -trimpath -ldflags "$ldflags" -o "$STAGE/out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) >&2
"$STAGE/out/kube-apiserver" --version >&2
"$STAGE/out/etcd" --version | awk 'NR == 1' >&2
# Atomic publish: the cache directory appears complete or not at all.
rm -rf "$ASSETS"
mv "$STAGE/out" "$ASSETS"
log "built in $((SECONDS - started))s; cached in $ASSETS"
echo "$ASSETS"
