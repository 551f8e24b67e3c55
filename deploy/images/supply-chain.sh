#!/usr/bin/env bash
# The images' supply chain:
#
#   deploy/images/supply-chain.sh lint            hadolint on the Containerfile
#   deploy/images/supply-chain.sh audit           pip-audit of the locked runtime dependencies
#   deploy/images/supply-chain.sh sbom [SERVICE...]  a CycloneDX SBOM of each built image's
#                                                 Python environment: dist/sbom/<service>.cdx.json
#
# The tools are pinned in the workspace's dev group (make install).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
export CONTAINERS_CONF="$REPO/deploy/images/containers.conf"
VENV="$REPO/.venv/bin"
UV="${UV:-$(command -v uv || echo "${DATAPOLIS_CACHE:-$HOME/.cache/datapolis}/tools/bin/uv")}"
# Python's HTTPS clients carry their own CA list; trust the host's (it may sit
# behind a TLS-inspecting proxy).
CA_BUNDLE="${IMAGES_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[[ -s $CA_BUNDLE ]] && export REQUESTS_CA_BUNDLE="$CA_BUNDLE" SSL_CERT_FILE="$CA_BUNDLE"

# Advisories accepted, each with its reason (pip-audit --ignore-vuln ID).
# None today.
IGNORED_VULNS=()

die() { echo "supply-chain.sh: $*" >&2; exit 1; }

lint() {
  "$VENV/hadolint" --failure-threshold info Containerfile
  echo "hadolint: Containerfile is clean"
}

audit() {
  local requirements report ignore=() id
  requirements=$(mktemp)
  report=$(mktemp)
  # The runtime dependencies of every package, exactly as locked (no dev tools).
  "$UV" export --frozen --no-dev --all-packages --no-emit-workspace --no-hashes --quiet -o "$requirements"
  for id in "${IGNORED_VULNS[@]}"; do ignore+=(--ignore-vuln "$id"); done
  local rc=0
  "$VENV/pip-audit" -r "$requirements" --no-deps --disable-pip --progress-spinner off \
    --format json --output "$report" "${ignore[@]}" 2>/dev/null || rc=$?
  # pip-audit exits 1 on a known vulnerability; a skipped package (its
  # vulnerability service did not know it) does not fail it, so say how many.
  "$VENV/python" - "$report" "$requirements" "$rc" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
rc = int(sys.argv[3])
deps = report.get("dependencies", [])
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if d.get("skip_reason")]
for d in vulnerable:
    for v in d["vulns"]:
        fixes = ", ".join(v.get("fix_versions") or []) or "none yet"
        print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in: {fixes})")
print(f"pip-audit: {len(deps)} locked dependencies, {len(vulnerable)} vulnerable, "
      f"{len(skipped)} not audited")
if skipped and len(skipped) == len(deps):
    print("pip-audit: WARNING the vulnerability service answered for none of them "
          "(unreachable from here, or a PyPI mirror without its per-release JSON API); "
          f"first reason: {skipped[0]['skip_reason']}")
elif skipped:
    print("pip-audit: not audited: " + ", ".join(f"{d['name']} {d.get('version', '')}" for d in skipped))
sys.exit(1 if vulnerable or rc not in (0, 1) else 0)
PY
  rm -f "$requirements" "$report"
}

sbom() {
  local services=("$@") service image mnt pyproject log out="$REPO/dist/sbom"
  ((${#services[@]})) || services=(catalog ingest consent notify demo)
  mkdir -p "$out"
  [[ -x /usr/bin/python3.11 ]] || die "the SBOMs read the images' venvs with /usr/bin/python3.11: apt-get install python3.11"
  for service in "${services[@]}"; do
    image=$(cut -d' ' -f1 "$REPO/dist/images/$service.digest" 2>/dev/null) \
      || die "no dist/images/$service.digest; run: make images"
    [[ -n $image ]] || die "no dist/images/$service.digest; run: make images"
    pyproject=services/$service/pyproject.toml
    [[ $service == demo ]] && pyproject=demo/pyproject.toml
    # The image's venv, read in place: its python is a link to
    # /usr/bin/python3.11, run here as the host's own (Debian's python3.11,
    # which make install puts there), and its pyvenv.cfg puts the image's
    # site-packages on the path.
    # cyclonedx-py's own schema validation takes 7 s a file; the check below
    # is the structural one that matters here.
    if [[ $EUID -eq 0 ]]; then
      mnt=$(podman image mount "$image")
      if ! log=$("$VENV/cyclonedx-py" environment --no-validate --pyproject "$pyproject" \
        --output-reproducible --of JSON -o "$out/$service.cdx.json" "$mnt/opt/datapolis/bin/python" 2>&1); then
        podman image unmount "$image" >/dev/null
        echo "$log" >&2
        die "no SBOM for $image"
      fi
      podman image unmount "$image" >/dev/null
    else
      podman unshare bash -c 'mnt=$(podman image mount "$1") && "$2" environment --no-validate --pyproject "$3" \
        --output-reproducible --of JSON -o "$4" "$mnt/opt/datapolis/bin/python" >/dev/null 2>&1; \
        podman image unmount "$1" >/dev/null' _ "$image" "$VENV/cyclonedx-py" "$pyproject" "$out/$service.cdx.json"
    fi
    "$VENV/python" - "$out/$service.cdx.json" "$image" <<'PY'
import json, sys
bom = json.load(open(sys.argv[1]))
assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"], "not a CycloneDX document"
components = bom.get("components") or []
assert components and all(c.get("name") and c.get("version") for c in components), "components without a name and version"
print(f"sbom: {sys.argv[1]} ({len(components)} components, {sys.argv[2]})")
PY
  done
}

case "${1:-}" in
  lint) lint ;;
  audit) audit ;;
  sbom) shift; sbom "$@" ;;
  *) echo "usage: $0 {lint|audit|sbom [SERVICE...]}" >&2; exit 2 ;;
esac
