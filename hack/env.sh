# Source this file (`. hack/env.sh`) to put konnector's developer tools on PATH in your shell: helm, buf and grpcurl
# from hack/tools/node_modules/.bin (kubectl comes from Debian's kubernetes-client, in /usr/bin). It installs nothing;
# `bash hack/ensure-tools.sh helm buf grpcurl kubectl` does, and ./hack/sandbox.sh --keep runs it for you.
_konnector_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
case ":$PATH:" in
  *":$_konnector_root/hack/tools/node_modules/.bin:"*) ;;
  *) export PATH="$_konnector_root/hack/tools/node_modules/.bin:$PATH" ;;
esac
unset _konnector_root
