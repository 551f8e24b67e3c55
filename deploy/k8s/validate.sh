#!/usr/bin/env bash
# Render every overlay with kustomize and validate each resource offline:
# core kinds against the Kubernetes JSON schemas, custom resources (Strimzi,
# CloudNativePG, Prometheus Operator, Gateway API, Envoy Gateway) against
# their CRDs' openAPIV3Schema, plus cross-references, PromQL and the
# project's policies (pinned images, probes, resources, hardening, PDBs,
# network policies, routes; see validate.py). Exits non-zero on any
# invalid resource.
#
#   deploy/k8s/validate.sh [OVERLAY_DIR...]
#
# Without arguments it validates every folder of overlays/; with arguments,
# those kustomization folders only (tests feed it broken ones). Each is
# reported by its folder's name.
#
# Installs what it needs, pinned, into a cache folder (reused across runs):
#   kustomize      go install (Go module proxy); `kubectl kustomize` if no Go
#   Python tools   pip, into a virtual environment
#
# Environment:
#   CRD_DIRS       folders of CRD YAML, colon-separated
#                  (default: deploy/k8s/crds, vendored; see its README)
#   K8S_VERSIONS   Kubernetes versions to validate against (default "1.30 1.37":
#                  the oldest these manifests support and the newest known)
#   TOOLS_DIR      where tools are installed
#                  (default: ${XDG_CACHE_HOME:-~/.cache}/datapolis/k8s-validate)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

KUSTOMIZE_VERSION=v5.8.0
PYTHON_PACKAGES=(
  kubernetes-validate==1.37.0  # ships the Kubernetes JSON schemas
  jsonschema==4.26.0
  referencing==0.37.0
  PyYAML==6.0.3
  promql-parser==0.12.0
)
CRD_DIRS=${CRD_DIRS:-$here/crds}
K8S_VERSIONS=${K8S_VERSIONS:-1.30 1.37}
TOOLS_DIR=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/datapolis/k8s-validate}

log() { printf '%s\n' "$*" >&2; }

install_kustomize() {
  local bin="$TOOLS_DIR/kustomize-$KUSTOMIZE_VERSION/kustomize"
  if [[ ! -x $bin ]] && command -v go >/dev/null; then
    log "installing kustomize $KUSTOMIZE_VERSION (go install)..."
    GOBIN=$(dirname "$bin") go install \
      "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2 ||
      log "go install failed; falling back to kubectl kustomize"
  fi
  if [[ -x $bin ]]; then
    KUSTOMIZE=("$bin" build)
  elif command -v kubectl >/dev/null; then
    KUSTOMIZE=(kubectl kustomize)
  else
    log "error: need Go (to install kustomize) or kubectl"
    exit 2
  fi
}

install_python_tools() {
  local stamp="${PYTHON_PACKAGES[*]}"
  VENV="$TOOLS_DIR/venv"
  if [[ ! -f $VENV/.installed || $(cat "$VENV/.installed") != "$stamp" ]]; then
    log "installing ${PYTHON_PACKAGES[*]} (pip, into $VENV)..."
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}" >&2
    printf '%s' "$stamp" >"$VENV/.installed"
  fi
}

mkdir -p "$TOOLS_DIR"
install_kustomize
install_python_tools
log "kustomize: ${KUSTOMIZE[*]}"

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

overlays=("$@")
[[ ${#overlays[@]} -gt 0 ]] || overlays=("$here"/overlays/*/)
targets=()
for overlay in "${overlays[@]}"; do
  name=$(basename "$overlay")
  "${KUSTOMIZE[@]}" "$overlay" >"$rendered/$name.yaml"
  targets+=("$name=$rendered/$name.yaml")
done

crd_args=()
IFS=: read -r -a crd_dirs <<<"$CRD_DIRS"
for dir in "${crd_dirs[@]}"; do
  [[ -d $dir ]] || { log "error: CRD folder $dir not found (set CRD_DIRS)"; exit 2; }
  crd_args+=(--crds "$dir")
done
version_args=()
for version in $K8S_VERSIONS; do
  version_args+=(--k8s-version "$version")
done

"$VENV/bin/python" "$here/validate.py" "${crd_args[@]}" "${version_args[@]}" "${targets[@]}"
