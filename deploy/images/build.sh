#!/usr/bin/env bash
# `make images`: every service's image (and the demo's), built on this machine
# with buildah, from a Debian-only base (deploy/images/base.sh): no Docker and
# no container registry needed, as in an air-gapped site.
#
#   deploy/images/build.sh [SERVICE...]     default: catalog ingest consent notify demo
#
# Tags ghcr.io/datapolis/<service>:<version> (version from the service's
# pyproject) in the local store, writes "<tag> <image ID>" to
# dist/images/<service>.digest, prints sizes and timings. Downloads during the
# build (PyPI) trust $IMAGES_CA_BUNDLE (default: the host's CA bundle), given to
# the build as a secret.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
export CONTAINERS_CONF="$REPO/deploy/images/containers.conf"
REGISTRY="${IMAGES_REGISTRY:-ghcr.io/datapolis}"
CA_BUNDLE="${IMAGES_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
OUT="$REPO/dist/images"
UV="${UV:-$(command -v uv || echo "${DATAPOLIS_CACHE:-$HOME/.cache/datapolis}/tools/bin/uv")}"
SERVICES=("$@")
((${#SERVICES[@]})) || SERVICES=(catalog ingest consent notify demo)

started=$SECONDS
log() { printf '[images +%ds] %s\n' $((SECONDS - started)) "$*"; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }

# buildah, podman (the base's import, the boot check) and mmdebstrap.
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v podman >/dev/null || missing+=(podman)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v runc >/dev/null || missing+=(runc)
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    die "missing: ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]} uidmap"
  fi
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "${missing[@]}" uidmap >/dev/null
fi
[[ -x $UV ]] || die "no uv at $UV; run: make install"

mapfile -t bases < <(deploy/images/base.sh)
((${#bases[@]} == 2)) || die "deploy/images/base.sh made no base"
log "bases: ${bases[*]}"

# uv for the build stage, as a one-file image made from the pinned uv that
# make install brought from PyPI (the Containerfile's default is uv's own image).
uv_version=$("$UV" --version | cut -d' ' -f2)
uv_image="localhost/datapolis/uv:$uv_version"
if ! podman image exists "$uv_image"; then
  log "making $uv_image from $UV"
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$(readlink -f "$UV")" /uv >/dev/null
  buildah commit --quiet "$ctr" "$uv_image" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

secret=()
if [[ -s $CA_BUNDLE ]]; then secret=(--secret "id=ca,src=$CA_BUNDLE"); fi
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | grep -v '^??' || true) ]]; then revision="$revision-dirty"; fi
mkdir -p "$OUT"

version_of() {  # the version in the package's pyproject
  local dir=services/$1
  [[ $1 == demo ]] && dir=demo
  sed -n 's/^version = "\(.*\)"/\1/p' "$dir/pyproject.toml" | head -n1
}

for service in "${SERVICES[@]}"; do
  case $service in catalog | ingest | consent | notify | demo) ;; *) die "unknown service: $service" ;; esac
  version=$(version_of "$service")
  tag="$REGISTRY/$service:$version"
  log "building $tag"
  t0=$SECONDS
  if ! buildah bud --isolation chroot --layers --pull=never --quiet \
    --file Containerfile \
    --build-arg "SERVICE=$service" \
    --build-arg "BASE=${bases[0]}" \
    --build-arg "BUILD_BASE=${bases[1]}" \
    --build-arg "UV_IMAGE=$uv_image" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    "${secret[@]}" \
    --iidfile "$OUT/$service.iid" \
    --tag "$tag" . >"$OUT/$service.build.log" 2>&1; then
    tail -n 40 "$OUT/$service.build.log" >&2
    die "building $tag failed (log: $OUT/$service.build.log)"
  fi
  id=$(cat "$OUT/$service.iid")
  rm -f "$OUT/$service.iid"
  # The local image ID (its config's digest). The registry's manifest digest,
  # the one to pin in kustomize, is known at push: podman push --digestfile.
  echo "$tag $id" >"$OUT/$service.digest"
  log "built $tag in $((SECONDS - t0))s: $id"
done

# The untagged intermediate images are the layer cache of the next build
# (buildah --layers): kept. `podman image prune` reclaims them.
log "done in $((SECONDS - started))s"
podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^$REGISTRY/" | sort
