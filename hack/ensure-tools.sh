#!/usr/bin/env bash
# Installs konnector's pinned developer tools (buf, helm) from npm into hack/tools/node_modules and prints the
# directory to put on PATH. npm, like Node.js, comes from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/tools"
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
if [[ ! -x node_modules/.bin/buf || ! -x node_modules/.bin/helm ]]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
echo "$PWD/node_modules/.bin"
