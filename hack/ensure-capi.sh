#!/usr/bin/env bash
# Ensures CAPI's core manager (the program CAPI ships as cluster-api-controller) exists, built from the
# sigs.k8s.io/cluster-api Go module at VERSION (default v1.14.2), with the manifests it needs from the same module:
# its CRDs and its webhook configurations. Prints the directory as the last line of stdout:
#   bin/manager            the core manager (feature gates ClusterTopology and RuntimeSDK are set by the harness)
#   crd/*.yaml             every CRD of the core provider (config/crd/bases)
#   webhook/manifests.yaml its Validating/MutatingWebhookConfigurations
#   VERSION                "sigs.k8s.io/cluster-api vX.Y.Z"
#
# Served here: v1.14.2 (newest) and v1.13.6 (the previous line); CAPI 1.10, the oldest line konnector claims, is not
# served by the module proxy, nor is 1.12, so those shapes stay with the CAPI stand-in (tests/src/capi_stand_in.rs).
#
# Why a scratch copy: from v1.14 the module's main package is core/main.go and the API types are a nested module
# (sigs.k8s.io/cluster-api/api) that the root go.mod replaces with ./api, a directory the module zip does not carry.
# The build therefore copies the module into a writable directory and puts the served api module (same version)
# where the replace points. v1.13 still carries api/ in-tree with main.go at the root.
set -euo pipefail
cd "$(dirname "$0")/upstream"

VERSION=${1:-v1.14.2}
RECIPE=1
case "$VERSION" in
  v1.14.2 | v1.13.6) ;;
  *) echo "ensure-capi: $VERSION is not one of the built releases (v1.14.2, v1.13.6)" >&2; exit 2 ;;
esac

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/konnector"
OUT="$CACHE_ROOT/capi-$VERSION-r$RECIPE"
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.capi-$VERSION.lock"
flock 9
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi

# shellcheck source=upstream/go-env.sh
. ./go-env.sh
log() { echo "ensure-capi: $*" >&2; }

module_dir() {
  # go mod download checks the module's hash against the Go checksum database before it unpacks it.
  (cd "$(mktemp -d)" && go mod download -json "$1@$2") | awk -F'"' '$2 == "Dir" { print $4 }'
}

STAGE=$(mktemp -d "$CACHE_ROOT/.capi-$VERSION.XXXXXX")
trap 'chmod -R u+w "$STAGE" 2>/dev/null; rm -rf "$STAGE"' EXIT
started=$SECONDS
log "building CAPI's core manager from sigs.k8s.io/cluster-api $VERSION (first run: several minutes on 2 cores)"
src=$(module_dir sigs.k8s.io/cluster-api "$VERSION")
cp -r "$src" "$STAGE/src"
chmod -R u+w "$STAGE/src"
if [[ -d "$STAGE/src/core/config" ]]; then
  main=./core config="$STAGE/src/core/config"
  api=$(module_dir sigs.k8s.io/cluster-api/api "$VERSION")
  cp -r "$api" "$STAGE/src/api"
  chmod -R u+w "$STAGE/src/api"
else
  main=. config="$STAGE/src/config"
fi
mkdir -p "$STAGE/bin" "$STAGE/crd" "$STAGE/webhook"
(cd "$STAGE/src" && go build -trimpath -o "$STAGE/bin/manager" "$main")
install -m 0644 "$config"/crd/bases/*.yaml "$STAGE/crd/"
install -m 0644 "$config/webhook/manifests.yaml" "$STAGE/webhook/manifests.yaml"
printf 'sigs.k8s.io/cluster-api %s\n' "$VERSION" >"$STAGE/VERSION"
rm -rf "$STAGE/src"
touch "$STAGE/.complete"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
trap - EXIT
log "cached in $OUT ($((SECONDS - started))s)"
echo "$OUT"
