#!/usr/bin/env bash
# The Debian-only base images, made with mmdebstrap from Debian's archive
# alone (no container registry) and imported into the local image store:
#
#   localhost/datapolis/base:bookworm-py3.11        bookworm with python3.11: the images' base
#   localhost/datapolis/build-base:bookworm-py3.11  the same plus binutils, for the build stage
#                                                   (it strips the wheels' shared objects)
#
# Both come from one snapshot of the archive, so their python3.11 is the same
# build (the build stage's venv runs on the other). Cached: the tarballs are
# kept under ~/.cache/datapolis/images/ keyed by the package lists and options
# below; they are made once, and only re-imported when the store lost them.
#
#   deploy/images/base.sh            prints the two image names, base first
#   IMAGES_REFRESH_BASE=1 ...        remakes them (e.g. to pick up security updates)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO/deploy/images/containers.conf}"
CACHE="${DATAPOLIS_CACHE:-$HOME/.cache/datapolis}/images"
BASE_IMAGE=localhost/datapolis/base:bookworm-py3.11
BUILD_BASE_IMAGE=localhost/datapolis/build-base:bookworm-py3.11
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# The smallest set that runs the services: the Essential packages (a shell
# and coreutils for RUN steps, dpkg's database for scanners) plus Python and
# the public CAs (notify's webhooks, PyPI during the build). usr-is-merged,
# with the merged-usr hook, stands in for usrmerge and the full perl it pulls.
VARIANT=essential
PACKAGES=(python3.11 ca-certificates usr-is-merged)
BUILD_PACKAGES=("${PACKAGES[@]}" binutils)
# Nothing a container reads: documentation (copyright notices kept), man
# pages, translations, lintian overrides.
DPKG_OPTS=(
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-exclude=/usr/share/lintian/*'
  'path-exclude=/usr/share/linda/*'
  'path-exclude=/usr/share/bash-completion/*'
  # glibc's iconv converters: Python brings its own codecs.
  'path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*'
)

started=$SECONDS
log() { printf '[base +%ds] %s\n' $((SECONDS - started)) "$*" >&2; }
die() { printf 'base.sh: %s\n' "$*" >&2; exit 1; }

key=$(printf '%s\n' "$SUITE" "$VARIANT" "$MIRROR" "$SECURITY_MIRROR" "${PACKAGES[@]}" \
  "${BUILD_PACKAGES[@]}" "${DPKG_OPTS[@]}" | sha256sum | cut -c1-16)
mkdir -p "$CACHE"

bootstrap() {  # bootstrap TARBALL PACKAGE...
  local tarball=$1 include o opts=()
  shift
  include=$(IFS=,; echo "$*")
  for o in "${DPKG_OPTS[@]}"; do opts+=("--dpkgopt=$o"); done
  # The hooks' $1 is the new root, expanded by mmdebstrap.
  # shellcheck disable=SC2016
  mmdebstrap --verbose --format=tar --variant="$VARIANT" --include="$include" "${opts[@]}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook='rm -rf "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/log/*' \
    --customize-hook='cd "$1"/usr/lib/python3.11 && rm -rf idlelib tkinter turtledemo lib2to3 ensurepip' \
    --customize-hook='ln -sf python3.11 "$1"/usr/bin/python3' \
    "$SUITE" "$tarball.partial" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" >"$tarball.log" 2>&1 \
    || { tail -n 40 "$tarball.log" >&2; die "mmdebstrap failed (log: $tarball.log)"; }
  mv "$tarball.partial" "$tarball"
}

base_tar="$CACHE/base-$SUITE-py3.11-$key.tar"
build_tar="$CACHE/build-base-$SUITE-py3.11-$key.tar"
if [[ -n ${IMAGES_REFRESH_BASE:-} ]]; then rm -f "$base_tar" "$build_tar"; fi
if [[ ! -s $base_tar || ! -s $build_tar ]]; then
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
  rm -f "$base_tar" "$build_tar"
  log "making the bases with mmdebstrap ($SUITE, $VARIANT + ${PACKAGES[*]}; + binutils to build); cached in $CACHE"
  # Side by side: they download the same packages, mostly.
  bootstrap "$base_tar" "${PACKAGES[@]}" &
  pid=$!
  bootstrap "$build_tar" "${BUILD_PACKAGES[@]}" || { wait "$pid" || true; exit 1; }
  wait "$pid"
  # Tarballs of other keys are stale.
  find "$CACHE" -maxdepth 1 -name "*base-$SUITE-py3.11-*" ! -name "*-$key.*" -delete
  log "base tarballs made ($(du -h "$base_tar" | cut -f1), $(du -h "$build_tar" | cut -f1))"
fi

import() {  # import TARBALL IMAGE: unless the store has this very tarball
  local tarball=$1 image=$2 current
  current=$(podman image inspect --format '{{index .Labels "org.datapolis.base-key"}}' "$image" 2>/dev/null || true)
  if [[ $current == "$key" ]]; then
    log "$image is up to date (key $key)"
    return 0
  fi
  log "importing $tarball as $image"
  podman import --quiet \
    --change "LABEL org.datapolis.base-key=$key" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3.11"]' \
    "$tarball" "$image" >/dev/null
}
import "$base_tar" "$BASE_IMAGE"
import "$build_tar" "$BUILD_BASE_IMAGE"
echo "$BASE_IMAGE"
echo "$BUILD_BASE_IMAGE"
