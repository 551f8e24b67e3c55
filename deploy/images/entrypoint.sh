#!/bin/sh
# The images' entrypoint. `api` (the default), `worker`, `migrate` or options
# run the service's command line, `python -m datapolis_<service> ...`; the demo
# image runs the demo. Anything else runs as given (`datapolis --help`).
# Kubernetes' `command:` replaces this entrypoint altogether.
set -eu
service="${DATAPOLIS_SERVICE:?the image sets DATAPOLIS_SERVICE}"

if [ "$service" = demo ]; then
  case "${1:-}" in
    "" | -*) exec python -m datapolis_demo "$@" ;;
    *) exec "$@" ;;
  esac
fi

case "${1:-api}" in
  api | worker | migrate | -*) ;;
  *) exec "$@" ;;
esac
[ $# -gt 0 ] || set -- api

# In a container the API and the worker's probes must be reachable from
# outside it: every interface, port 8000 (what the manifests probe), unless
# the environment says otherwise.
prefix=$(printf '%s' "$service" | tr '[:lower:]' '[:upper:]')
for setting in HTTP__HOST WORKER_HTTP__HOST; do
  printenv "${prefix}_$setting" >/dev/null || export "${prefix}_$setting=0.0.0.0"
done
printenv "${prefix}_HTTP__PORT" >/dev/null || export "${prefix}_HTTP__PORT=8000"
exec python -m "datapolis_$service" "$@"
