#!/usr/bin/env bash
# Installs the Python toolchain: uv (from PyPI) and the locked dependencies of
# the workspace into .venv. Needs Python 3.11 on the machine.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
UV_VERSION="0.13.9"
die() { echo "bootstrap.sh: $*" >&2; exit 1; }

PY=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null \
    && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY=$(command -v "$candidate")
    break
  fi
done
if [[ -z $PY ]]; then
  if [[ $EUID -eq 0 && "${CI:-}" == "true" ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
    PY=$(command -v python3.11)
  else
    die "Python 3.11 is required; install it: sudo apt-get install -y python3.11 python3.11-venv"
  fi
fi

# uv: the one on PATH, else a pinned copy in a small tools venv of our own.
TOOLS="${DATAPOLIS_CACHE:-$HOME/.cache/datapolis}/tools"
if command -v uv >/dev/null; then
  UV=$(command -v uv)
elif [[ -x "$TOOLS/bin/uv" ]]; then
  UV="$TOOLS/bin/uv"
else
  echo "installing uv $UV_VERSION from PyPI into $TOOLS"
  "$PY" -m venv "$TOOLS" || die "python3.11 -m venv failed; install: sudo apt-get install -y python3.11-venv"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  UV="$TOOLS/bin/uv"
fi

cd "$REPO"
"$UV" sync --frozen --python "$PY" --quiet
echo "python environment ready: $REPO/.venv ($("$REPO/.venv/bin/python" --version), uv $("$UV" --version | cut -d' ' -f2))"
