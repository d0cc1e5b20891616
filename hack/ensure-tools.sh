#!/usr/bin/env bash
# Installs the developer tools named as arguments and prints the directory to put on PATH (hack/tools/node_modules/.bin),
# saying on stderr what it installs and why it takes time. Tools:
#   helm        built from the helm.sh/helm/v4 Go module (hack/upstream/helm/go.mod pins the release), cached per
#               version in ~/.cache/konnector (about 3 minutes on 2 cores, once; Go as hack/upstream/go-env.sh finds it);
#   buf         from npm, pinned in hack/tools/package.json (npm itself comes from Debian when missing);
#   grpcurl     the Rust port (grpcurl-rs), compiled from crates.io into ~/.cache/konnector (a few minutes, once);
#   kubectl     Debian's kubernetes-client, unless a working kubectl is already on PATH;
#   cargo-deny  compiled from crates.io into ~/.cache/konnector (a few minutes, once);
#   skopeo      Debian's skopeo, which reads the OCI layouts hack/build-images.sh writes;
#   actionlint  built from the github.com/rhysd/actionlint Go module (hack/upstream/actionlint/go.mod pins the
#               release), cached per version in ~/.cache/konnector (under a minute, once), with Debian's shellcheck,
#               which it runs on the workflows' `run:` scripts.
# With no arguments it installs helm and buf, what the tests that render the chart need.
set -euo pipefail
cd "$(dirname "$0")/tools"
bin="$PWD/node_modules/.bin"
say() { echo "ensure-tools: $*" >&2; }
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Rust tools are compiled once per version into the per-user cache, not into each checkout: a fresh clone (every CI
# run) would otherwise spend minutes of its budget compiling the same two binaries again. `cargo install` builds in a
# scratch target directory it removes, and the cache directory is renamed into place whole, under a lock.
cargo_tool() {
  local crate=$1 version=$2 binary=$3
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/konnector/cargo-$crate-$version"
  if [[ ! -x $root/bin/$binary ]]; then
    mkdir -p "$(dirname "$root")"
    (
      flock 8
      if [[ ! -x $root/bin/$binary ]]; then
        say "compiling $binary ($crate $version) from crates.io into $root; this takes a few minutes, once"
        local stage
        stage=$(mktemp -d "$root.stage.XXXXXX")
        chmod 755 "$stage"
        cargo install --locked "$crate" --version "$version" --root "$stage" >&2 || { rm -rf "$stage"; exit 1; }
        rm -rf "$root"
        mv "$stage" "$root"
      fi
    ) 8>"$(dirname "$root")/.cargo-tools.lock"
  fi
  mkdir -p "$bin"
  ln -sf "$root/bin/$binary" "$bin/$binary"
}

tools=("$@")
[[ ${#tools[@]} -eq 0 ]] && tools=(helm buf)
for tool in "${tools[@]}"; do
  case "$tool" in
    buf)
      if [[ ! -x $bin/buf ]]; then
        if ! command -v npm >/dev/null 2>&1; then
          say "installing npm from Debian (to install buf)"
          apt_install nodejs npm
        fi
        # Pinned to an exact version in package.json, and it depends on nothing else (buf's per-platform binaries
        # are pinned by buf itself), so no lockfile is needed; a lockfile written on one machine also lists only
        # that platform's optional packages, which makes `npm ci` refuse it elsewhere.
        say "installing buf from npm (pinned in hack/tools/package.json)"
        npm install --no-audit --no-fund --no-package-lock --loglevel=error >&2
      fi
      ;;
    helm)
      helm_version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" { print $3 }' ../upstream/helm/go.mod)
      helm_cache="${XDG_CACHE_HOME:-$HOME/.cache}/konnector/helm-$helm_version"
      if [[ ! -x $helm_cache/helm ]]; then
        say "building helm $helm_version from the helm.sh/helm/v4 Go module (about 3 minutes on 2 cores, once)"
        (
          cd ../upstream/helm
          # shellcheck source=../upstream/go-env.sh
          . ../go-env.sh
          stage=$(mktemp -d "${helm_cache}.XXXXXX")
          go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version \
            -X helm.sh/helm/v4/internal/version.gitTreeState=clean" -o "$stage/helm" helm.sh/helm/v4/cmd/helm >&2
          # One rename publishes it: a failed build leaves no half-written binary in the cache.
          rm -rf "$helm_cache"
          mv "$stage" "$helm_cache"
        )
      fi
      # Linked after every other tool: an npm install (buf) may prune links in node_modules/.bin it does not own.
      link_helm="$helm_cache/helm"
      ;;
    grpcurl)
      cargo_tool grpcurl-rs 0.2.1 grpcurl
      ;;
    cargo-deny)
      cargo_tool cargo-deny 0.20.2 cargo-deny
      ;;
    skopeo)
      if ! command -v skopeo >/dev/null 2>&1; then
        say "installing skopeo from Debian (reads and copies OCI image layouts)"
        apt_install skopeo
      fi
      ;;
    actionlint)
      actionlint_version=$(awk '$1 == "require" && $2 == "github.com/rhysd/actionlint" { print $3 }' ../upstream/actionlint/go.mod)
      actionlint_cache="${XDG_CACHE_HOME:-$HOME/.cache}/konnector/actionlint-$actionlint_version"
      if [[ ! -x $actionlint_cache/actionlint ]]; then
        say "building actionlint $actionlint_version from its Go module (under a minute, once)"
        (
          cd ../upstream/actionlint
          # shellcheck source=../upstream/go-env.sh
          . ../go-env.sh
          stage=$(mktemp -d "${actionlint_cache}.XXXXXX")
          go build -trimpath -ldflags "-s -w" -o "$stage/actionlint" github.com/rhysd/actionlint/cmd/actionlint >&2
          rm -rf "$actionlint_cache"
          mv "$stage" "$actionlint_cache"
        )
      fi
      if ! command -v shellcheck >/dev/null 2>&1; then
        say "installing shellcheck from Debian (actionlint checks the workflows' run: scripts with it)"
        apt_install shellcheck
      fi
      mkdir -p "$bin"
      ln -sfn "$actionlint_cache/actionlint" "$bin/actionlint"
      ;;
    kubectl)
      if ! kubectl version --client >/dev/null 2>&1; then
        say "installing kubectl from Debian (package kubernetes-client)"
        apt_install kubernetes-client
      fi
      ;;
    *) say "unknown tool '$tool' (known: helm buf grpcurl kubectl cargo-deny skopeo actionlint)"; exit 2 ;;
  esac
done
if [[ -n ${link_helm:-} ]]; then
  mkdir -p "$bin"
  ln -sfn "$link_helm" "$bin/helm"
fi
echo "$bin"
