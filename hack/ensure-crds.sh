#!/usr/bin/env bash
# Ensures the upstream CRDs the test harness and the sandbox install exist, taken from the projects' own Go modules
# at pinned versions, and prints the directory that holds them as the last line of stdout:
#   capi/      CAPI's Cluster, ClusterClass and ExtensionConfig CRDs from sigs.k8s.io/cluster-api $CAPI_VERSION
#              (v1beta1 and v1beta2 served, v1beta2 stored: what CAPI 1.11 and later install);
#   capi-v1beta1/  the same from $CAPI_V1BETA1_VERSION, for the harness's "v1beta1 only" mode. CAPI 1.10, the
#              oldest line konnector claims, is not served by the module proxy here; 1.8 is the nearest served
#              release whose Cluster stores v1beta1, as 1.10's does.
# CAAPH's module (sigs.k8s.io/cluster-api-addon-provider-helm) is not served by the module proxy at any version, so
# its CRDs stay the field-list fixtures in tests/crds (docs/testing.md: Real control planes).
#
# $KONNECTOR_CRDS wins when it names a directory that already holds both sets.
set -euo pipefail
cd "$(dirname "$0")/upstream"

CAPI_VERSION=v1.14.2
CAPI_V1BETA1_VERSION=v1.8.4
RECIPE=1

if [[ -n "${KONNECTOR_CRDS:-}" && -f "$KONNECTOR_CRDS/capi/cluster.x-k8s.io_clusters.yaml" \
      && -f "$KONNECTOR_CRDS/capi-v1beta1/cluster.x-k8s.io_clusters.yaml" ]]; then
  echo "$KONNECTOR_CRDS"; exit 0
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/konnector"
OUT="$CACHE_ROOT/crds-capi-$CAPI_VERSION-$CAPI_V1BETA1_VERSION-r$RECIPE"
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.crds.lock"
flock 9
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi

# shellcheck source=upstream/go-env.sh
. ./go-env.sh
log() { echo "ensure-crds: $*" >&2; }

module_dir() {
  # go mod download checks the module's hash against the Go checksum database before it unpacks it.
  (cd "$(mktemp -d)" && go mod download -json "$1@$2") | awk -F'"' '$2 == "Dir" { print $4 }'
}

STAGE=$(mktemp -d "$CACHE_ROOT/.crds.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
log "taking CAPI's CRDs from sigs.k8s.io/cluster-api $CAPI_VERSION and $CAPI_V1BETA1_VERSION (a module download, once)"
capi=$(module_dir sigs.k8s.io/cluster-api "$CAPI_VERSION")
old=$(module_dir sigs.k8s.io/cluster-api "$CAPI_V1BETA1_VERSION")
mkdir -p "$STAGE/capi" "$STAGE/capi-v1beta1"
for crd in cluster.x-k8s.io_clusters cluster.x-k8s.io_clusterclasses runtime.cluster.x-k8s.io_extensionconfigs; do
  install -m 0644 "$capi/core/config/crd/bases/$crd.yaml" "$STAGE/capi/"
  install -m 0644 "$old/config/crd/bases/$crd.yaml" "$STAGE/capi-v1beta1/"
done
printf 'sigs.k8s.io/cluster-api %s\n' "$CAPI_VERSION" >"$STAGE/capi/VERSION"
printf 'sigs.k8s.io/cluster-api %s\n' "$CAPI_V1BETA1_VERSION" >"$STAGE/capi-v1beta1/VERSION"
touch "$STAGE/.complete"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
trap - EXIT
log "cached in $OUT"
echo "$OUT"
