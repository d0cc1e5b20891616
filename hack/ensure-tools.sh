#!/usr/bin/env bash
# Installs konnector's pinned developer tools and prints the directory to put on PATH: buf and helm from npm into
# hack/tools/node_modules (npm itself comes from Debian when missing), and grpcurl (the Rust port, grpcurl-rs)
# from crates.io into hack/tools/cargo, linked next to them.
set -euo pipefail
cd "$(dirname "$0")/tools"
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
if [[ ! -x node_modules/.bin/buf || ! -x node_modules/.bin/helm ]]; then
  # Both packages are pinned to exact versions in package.json and depend on nothing else (buf's per-platform
  # binaries are pinned by buf itself), so no lockfile is needed; a lockfile written on one machine also lists
  # only that platform's optional packages, which makes `npm ci` refuse it elsewhere.
  npm install --no-audit --no-fund --no-package-lock --loglevel=error >&2
fi
if [[ ! -x node_modules/.bin/grpcurl ]]; then
  cargo install --quiet --locked grpcurl-rs --version 0.2.1 --root "$PWD/cargo" >&2
  ln -sf "$PWD/cargo/bin/grpcurl" node_modules/.bin/grpcurl
fi
echo "$PWD/node_modules/.bin"
