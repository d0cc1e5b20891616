#!/usr/bin/env bash
# Builds the images of konnector-gateway and konnector-executor as OCI image layouts, without a container daemon
# or a base image: the static binaries of hack/build-static.sh, plus /etc/passwd, /etc/group, /tmp and the CA
# bundle, written by konnector-image (crate release/). Prints the output directory, which holds one layout per
# image, each tagged with the chart's appVersion:
#   OUT/konnector-gateway   (skopeo inspect oci:OUT/konnector-gateway:<appVersion>)
#   OUT/konnector-executor
# Reproducible: the same binaries, revision, commit time and CA bundle give the same digests (tests/tests/
# release_images.rs builds twice and compares, and reads the result with skopeo).
#
# Usage: hack/build-images.sh [OUT]       (OUT defaults to target/images)
# Environment (optional):
#   KONNECTOR_IMAGE_BINARIES   "linux/amd64=DIR linux/arm64=DIR": the platforms and the directories holding their
#                              static binaries (default: this machine's platform, built by hack/build-static.sh,
#                              or KONNECTOR_STATIC_BIN_DIR when set). The release workflow passes both.
#   KONNECTOR_GIT_REVISION     the revision label (default: git rev-parse HEAD).
#   SOURCE_DATE_EPOCH          every timestamp in the images (default: HEAD's commit time, 0 outside git).
#   KONNECTOR_IMAGE_CA_BUNDLE  the trust anchors to carry (default: /etc/ssl/certs/ca-certificates.crt when it
#                              exists, i.e. Debian's ca-certificates; it is an input of the digest). "none": no bundle.
#   KONNECTOR_IMAGE_TAG        the tag (default: the chart's appVersion).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$PWD/target/images}"

app_version=$(awk -F'"' '/^appVersion:/ { print $2 }' deploy/chart/konnector/Chart.yaml)
[[ -n $app_version ]] || { echo "build-images: no appVersion in deploy/chart/konnector/Chart.yaml" >&2; exit 1; }
tag="${KONNECTOR_IMAGE_TAG:-$app_version}"
revision="${KONNECTOR_GIT_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
ca_bundle="${KONNECTOR_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
ca_args=()
if [[ $ca_bundle != none ]]; then
  if [[ -f $ca_bundle ]]; then
    ca_args=(--ca-bundle "$ca_bundle")
  elif [[ -n ${KONNECTOR_IMAGE_CA_BUNDLE:-} ]]; then
    echo "build-images: KONNECTOR_IMAGE_CA_BUNDLE=$ca_bundle is not a file" >&2; exit 1
  else
    echo "build-images: no $ca_bundle (Debian's ca-certificates); the images carry no CA bundle" >&2
  fi
fi

if [[ -z ${KONNECTOR_IMAGE_BINARIES:-} ]]; then
  arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
  # The binaries take their revision from git too (runtime/build.rs: the 12-digit prefix of the label's), or from
  # KONNECTOR_GIT_REVISION when it is set.
  dir="${KONNECTOR_STATIC_BIN_DIR:-$(bash hack/build-static.sh)}"
  KONNECTOR_IMAGE_BINARIES="linux/$arch=$dir"
fi

echo "build-images: building konnector-image (crate release/)" >&2
cargo build --release --locked -p konnector-release --bin konnector-image >&2
image_tool="${CARGO_TARGET_DIR:-$PWD/target}/release/konnector-image"

# name and the ports its Dockerfile target declares (deploy/docker/Dockerfile).
for image in "konnector-gateway 9443/tcp 8081/tcp" "konnector-executor 8090/tcp 8091/tcp"; do
  read -r name ports <<<"$image"
  args=()
  for p in $ports; do args+=(--expose "$p"); done
  for pair in $KONNECTOR_IMAGE_BINARIES; do args+=(--binary "${pair%%=*}=${pair#*=}/$name"); done
  rm -rf "${out:?}/$name"
  digest=$(SOURCE_DATE_EPOCH="$epoch" "$image_tool" --out "$out/$name" --tag "$tag" --image-version "$app_version" \
    --revision "$revision" "${ca_args[@]}" "${args[@]}")
  echo "build-images: $name:$tag $digest ($KONNECTOR_IMAGE_BINARIES)" >&2
done
echo "$out"
