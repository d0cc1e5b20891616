#!/usr/bin/env bash
# Ensures etcd and kube-apiserver binaries exist and prints the directory that holds both
# (the KUBEBUILDER_ASSETS convention) as the last line of stdout.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS, if it already holds both binaries;
#   2. the per-user cache, keyed by Kubernetes version;
#   3. a fresh build of kube-apiserver from Debian's `kubernetes` source package, plus etcd from `etcd-server`.
#
# The build happens in a scratch directory and is moved into the cache with one rename, so an interrupted or failed
# build never leaves a half-written binary behind. A lock serialises concurrent callers.
set -euo pipefail

K8S_VERSION=v1.20.2
if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/etcd" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/konnector"
ASSETS="$CACHE_ROOT/control-plane-$K8S_VERSION"
mkdir -p "$CACHE_ROOT"

log() { echo "ensure-control-plane: $*" >&2; }

have_assets() { [[ -x "$ASSETS/etcd" && -x "$ASSETS/kube-apiserver" ]]; }

if have_assets; then echo "$ASSETS"; exit 0; fi

exec 9>"$CACHE_ROOT/.lock"
flock 9
if have_assets; then echo "$ASSETS"; exit 0; fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >&2
}

if ! command -v etcd >/dev/null 2>&1; then
  log "installing etcd-server from Debian"
  apt_install etcd-server
fi
ETCD_BIN=$(command -v etcd)

STAGE=$(mktemp -d "$CACHE_ROOT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

log "building kube-apiserver $K8S_VERSION from Debian's kubernetes source package (about 4 minutes on 2 cores)"
if [[ ! -f /etc/apt/sources.list.d/debian-src.sources ]]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    | $SUDO tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
  apt_updated=0
fi
apt_install golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev

(
  cd "$STAGE"
  apt-get source --download-only kubernetes >&2
  tar xzf kubernetes_*.orig.tar.gz
  cd kubernetes-1.20.2
  # The vendored reflect2 v1.0.1 crashes under Go >= 1.18 on the first custom-resource write; Debian's 1.0.2 does not.
  R2=vendor/github.com/modern-go/reflect2
  rm -rf "$R2" && mkdir "$R2"
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R2"/
  rm -f "$R2"/*_test.go
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  export GOPATH=$PWD/.go CGO_ENABLED=0 GOCACHE="$CACHE_ROOT/gocache" \
         KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_TREE_STATE=clean GOFLAGS=
  make WHAT=cmd/kube-apiserver >&2
  mkdir -p "$STAGE/out"
  install -m 0755 _output/local/bin/linux/amd64/kube-apiserver "$STAGE/out/kube-apiserver"
)
"$STAGE/out/kube-apiserver" --version >&2
ln -s "$ETCD_BIN" "$STAGE/out/etcd"
rm -rf "$STAGE/kubernetes-1.20.2"
# Atomic publish: the cache directory appears complete or not at all.
rm -rf "$ASSETS"
mv "$STAGE/out" "$ASSETS"
log "cached in $ASSETS"
echo "$ASSETS"
