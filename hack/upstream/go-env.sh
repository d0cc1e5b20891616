# Sourced by the scripts that build upstream Go programs (hack/ensure-control-plane.sh, hack/ensure-tools.sh):
# puts a Go of at least GO_MIN on PATH and sets the build environment they share.
#
# The machine's `go` is used when it is new enough. Otherwise (a Debian machine whose golang-go is older), the Go
# toolchain is taken from the Go module proxy, where the go command itself publishes it as the module
# golang.org/toolchain, and unpacked once into ~/.cache/konnector/go-<version>.
GO_MIN=1.26
GO_FALLBACK=go1.26.8

go_new_enough() {
  local v
  v=$(go env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  # Compare major.minor numerically: 1.26 <= v.
  [[ $(printf '%s\n%s\n' "$GO_MIN" "${v%.*}" | sort -V | head -1) == "$GO_MIN" ]]
}

if ! command -v go >/dev/null 2>&1 || ! go_new_enough; then
  _go_root="${XDG_CACHE_HOME:-$HOME/.cache}/konnector/$GO_FALLBACK"
  if [[ ! -x $_go_root/bin/go ]]; then
    echo "go-env: no Go >= $GO_MIN on PATH; fetching $GO_FALLBACK from the Go module proxy (about 75 MB, once)" >&2
    _arch=$(uname -m); case "$_arch" in x86_64) _arch=amd64 ;; aarch64) _arch=arm64 ;; esac
    mkdir -p "$(dirname "$_go_root")"
    _zip=$(mktemp --suffix=.zip)
    curl -fsSL -o "$_zip" \
      "${GOPROXY_URL:-https://proxy.golang.org}/golang.org/toolchain/@v/v0.0.1-$GO_FALLBACK.linux-$_arch.zip"
    _unpack=$(mktemp -d "${_go_root}.XXXXXX")
    python3 -m zipfile -e "$_zip" "$_unpack"
    chmod +x "$_unpack"/golang.org/toolchain@*/bin/* "$_unpack"/golang.org/toolchain@*/pkg/tool/*/*
    rm -rf "$_go_root"
    mv "$_unpack"/golang.org/toolchain@* "$_go_root"
    rm -rf "$_unpack" "$_zip"
  fi
  export PATH="$_go_root/bin:$PATH"
fi

# Static binaries, module graph exactly as the committed go.sum says, and never a silent toolchain switch.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local
