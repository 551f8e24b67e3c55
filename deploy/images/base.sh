#!/usr/bin/env bash
# The Debian-only base image: bookworm with python3.11, made with mmdebstrap
# from Debian's archive alone (no container registry), imported into the
# local image store as $BASE_IMAGE. Cached: the tarball is kept under
# ~/.cache/datapolis/images/ keyed by the package list and options below, so
# it is made once and only re-imported when the store lost it.
#
#   deploy/images/base.sh            print the image name (build or import when needed)
#   IMAGES_REFRESH_BASE=1 ...        remake it (e.g. to pick up security updates)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO/deploy/images/containers.conf}"
CACHE="${DATAPOLIS_CACHE:-$HOME/.cache/datapolis}/images"
BASE_IMAGE="${BASE_IMAGE:-localhost/datapolis/base:bookworm-py3.11}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# The smallest set that runs the services: the Essential packages (a shell
# and coreutils for RUN steps, dpkg's database for scanners) plus Python and
# the public CAs (notify's webhooks, PyPI during the build). usr-is-merged,
# with the merged-usr hook, stands in for usrmerge and the full perl it pulls.
VARIANT=essential
PACKAGES=(python3.11 ca-certificates usr-is-merged)
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

log() { printf '[base] %s\n' "$*" >&2; }
die() { printf 'base.sh: %s\n' "$*" >&2; exit 1; }

key=$(printf '%s\n' "$SUITE" "$VARIANT" "$MIRROR" "$SECURITY_MIRROR" "${PACKAGES[@]}" "${DPKG_OPTS[@]}" \
  | sha256sum | cut -c1-16)
tarball="$CACHE/base-$SUITE-py3.11-$key.tar"
mkdir -p "$CACHE"

if [[ -n ${IMAGES_REFRESH_BASE:-} ]]; then rm -f "$tarball"; fi

if [[ ! -s $tarball ]]; then
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
  log "making the base with mmdebstrap ($SUITE, $VARIANT + ${PACKAGES[*]}); cached as $tarball"
  started=$SECONDS
  opts=()
  for o in "${DPKG_OPTS[@]}"; do opts+=("--dpkgopt=$o"); done
  include=$(IFS=,; echo "${PACKAGES[*]}")
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
    "deb $SECURITY_MIRROR $SUITE-security main" >"$CACHE/mmdebstrap.log" 2>&1 \
    || { tail -n 40 "$CACHE/mmdebstrap.log" >&2; die "mmdebstrap failed (log: $CACHE/mmdebstrap.log)"; }
  mv "$tarball.partial" "$tarball"
  log "base tarball made in $((SECONDS - started))s ($(du -h "$tarball" | cut -f1))"
  podman image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
fi

# The store remembers which tarball it imported: a label with the cache key.
current=$(podman image inspect --format '{{index .Labels "org.datapolis.base-key"}}' "$BASE_IMAGE" 2>/dev/null || true)
if [[ $current != "$key" ]]; then
  log "importing $tarball as $BASE_IMAGE"
  podman import --quiet \
    --change "LABEL org.datapolis.base-key=$key" \
    --change 'LABEL org.opencontainers.image.title="datapolis base: Debian bookworm, python3.11"' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3.11"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
else
  log "$BASE_IMAGE is up to date (key $key)"
fi
echo "$BASE_IMAGE"
