#!/usr/bin/env bash
# Boots every image next to a running Kafka and PostgreSQL, the way a cluster
# runs them: as the image's own user, read-only root filesystem, every
# capability dropped, no privilege escalation, a tmpfs on /tmp. For each
# service: `migrate` succeeds, the API's /readyz answers 200, the worker's
# /readyz answers 200. The demo image: its command lines start.
#
#   deploy/images/boot-check.sh [SERVICE...]   default: catalog ingest consent notify demo
#
# Each run uses database schemas, consumer groups and ports of its own (ports
# from $BOOT_CHECK_PORT, default 18600), so it can run beside `make up`.
# Every container it started is removed at the end, its schemas and topics
# dropped.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export CONTAINERS_CONF="$REPO/deploy/images/containers.conf"
REGISTRY="${IMAGES_REGISTRY:-ghcr.io/datapolis}"
KAFKA="127.0.0.1:${KAFKA_PORT:-9092}"
DSN="${DATABASE_URL:-postgresql://datapolis:datapolis@127.0.0.1:${PG_PORT:-55432}/datapolis}"
PORT_BASE="${BOOT_CHECK_PORT:-18600}"
DEADLINE="${BOOT_CHECK_TIMEOUT:-90}"
RUN="bc$(date +%s)$$"
LOGS=$(mktemp -d)
SERVICES=("$@")
((${#SERVICES[@]})) || SERVICES=(catalog ingest consent notify demo)

started=$SECONDS
log() { printf '[boot-check +%ds] %s\n' $((SECONDS - started)) "$*"; }
failures=()
fail() { failures+=("$1"); printf '[boot-check] FAIL %s\n' "$1" >&2; }

# The restrictions every container runs under.
# shellcheck disable=SC2054 # the commas are the tmpfs' options
HARDENED=(
  --network host --read-only --cap-drop ALL --security-opt no-new-privileges
  --tmpfs /tmp:rw,nosuid,nodev,size=64m,mode=1777 --label "org.datapolis.boot-check=$RUN"
)

image_of() {  # the tag make images gave SERVICE's image (dist/images/SERVICE.digest)
  cut -d' ' -f1 "$REPO/dist/images/$1.digest" 2>/dev/null || echo "$REGISTRY/$1:unbuilt"
}

declare -A API_PORT WORKER_PORT
i=0
for service in "${SERVICES[@]}"; do
  i=$((i + 1))
  API_PORT[$service]=$((PORT_BASE + i))
  WORKER_PORT[$service]=$((PORT_BASE + 50 + i))
done

env_of() {  # the settings of SERVICE for this run (development mode: the dev secrets)
  local service=$1 p=${1^^}
  printf '%s\n' \
    "${p}_DEV=true" \
    "${p}_LOG_JSON=false" \
    "${p}_SERVICE_NAME=$RUN-$service" \
    "${p}_POSTGRES__DSN=$DSN" \
    "${p}_POSTGRES__DB_SCHEMA=${RUN}_$service" \
    "${p}_KAFKA__BOOTSTRAP_SERVERS=$KAFKA" \
    "${p}_HTTP__PORT=${API_PORT[$service]}" \
    "${p}_HTTP__PUBLIC_URL=http://127.0.0.1:${API_PORT[$service]}" \
    "${p}_WORKER_HTTP__PORT=${WORKER_PORT[$service]}"
  # A consumer group of this run's own.
  [[ $service == notify ]] && echo "NOTIFY_DELIVERY__GROUP_ID=$RUN-notify-delivery"
  return 0
}

env_args() {
  local line
  while IFS= read -r line; do printf -- '--env\n%s\n' "$line"; done < <(env_of "$1")
}

readyz() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$1/readyz" || true
}

cleanup() {
  local rc=$? ids
  ids=$(podman ps -aq --filter "label=org.datapolis.boot-check=$RUN" 2>/dev/null || true)
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086 # one id per word
    podman rm -f --time 5 $ids >/dev/null 2>&1 || true
  fi
  # This run's schemas and Kafka topics (the catalog worker's changelogs),
  # dropped with the image's own asyncpg and aiokafka. Its consumer groups
  # are left to expire (aiokafka has no call to delete them).
  local image schemas=()
  for service in "${SERVICES[@]}"; do [[ $service != demo ]] && schemas+=("${RUN}_$service"); done
  if ((${#schemas[@]})); then
    image=$(image_of "${schemas[0]#"${RUN}_"}")
    podman run --rm --network host --entrypoint python "$image" -c '
import asyncio, sys, asyncpg
from aiokafka.admin import AIOKafkaAdminClient
async def main(dsn, bootstrap, run, *schemas):
    conn = await asyncpg.connect(dsn)
    for schema in schemas:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(f"datapolis-{run}-")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()
asyncio.run(main(*sys.argv[1:]))' "$DSN" "$KAFKA" "$RUN" "${schemas[@]}" >/dev/null 2>&1 \
      || echo "[boot-check] could not drop this run's schemas and topics (${RUN}_*, datapolis-$RUN-*)" >&2
  fi
  rm -rf "$LOGS"
  exit "$rc"
}
trap cleanup EXIT

show_logs() {  # show_logs CONTAINER
  echo "----- logs of $1 (last 40 lines)" >&2
  podman logs --tail 40 "$1" >&2 2>&1 || true
  echo "-----" >&2
}

declare -A CONTAINER IMAGE
services=()
for service in "${SERVICES[@]}"; do
  image=$(image_of "$service")
  podman image exists "$image" || { fail "$service: no image $image (run: make images)"; continue; }
  user=$(podman image inspect --format '{{.Config.User}}' "$image")
  if [[ -z $user || $user == 0* || $user == root* ]]; then fail "$service: image runs as root ($user)"; fi
  log "$service: $image, user $user"
  if [[ $service == demo ]]; then
    for cmd in --help "datapolis --help"; do
      # shellcheck disable=SC2086 # the command's words
      if out=$(podman run --rm "${HARDENED[@]}" "$image" $cmd 2>&1); then
        log "demo: '$cmd' runs ($(head -n1 <<<"$out"))"
      else
        fail "demo: '$cmd' failed"; echo "$out" >&2
      fi
    done
    continue
  fi
  IMAGE[$service]=$image
  services+=("$service")
done

# Every service's migrations at once (one schema each), then its processes.
declare -A MIGRATE_PID
for service in "${services[@]}"; do
  mapfile -t envs < <(env_args "$service")
  podman run --rm --name "$RUN-$service-migrate" "${HARDENED[@]}" "${envs[@]}" \
    "${IMAGE[$service]}" migrate >"$LOGS/$service-migrate.log" 2>&1 &
  MIGRATE_PID[$service]=$!
done
for service in "${services[@]}"; do
  if wait "${MIGRATE_PID[$service]}"; then
    log "$service: migrate succeeded ($(tail -n1 "$LOGS/$service-migrate.log"))"
  else
    fail "$service: migrate failed"; cat "$LOGS/$service-migrate.log" >&2; continue
  fi
  mapfile -t envs < <(env_args "$service")
  for role in api worker; do
    CONTAINER[$service-$role]="$RUN-$service-$role"
    podman run -d --name "$RUN-$service-$role" "${HARDENED[@]}" "${envs[@]}" "${IMAGE[$service]}" "$role" >/dev/null \
      || fail "$service $role: could not start"
  done
  log "$service: api (port ${API_PORT[$service]}) and worker (port ${WORKER_PORT[$service]}) started"
done

# Wait for every API and worker to be ready, or the deadline.
pending=("${!CONTAINER[@]}")
((${#pending[@]})) || pending=()
waited_from=$SECONDS
while ((${#pending[@]})); do
  still=()
  for key in "${pending[@]}"; do
    service=${key%-*} role=${key##*-} name=${CONTAINER[$key]}
    port=${API_PORT[$service]}
    [[ $role == worker ]] && port=${WORKER_PORT[$service]}
    state=$(podman inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
    if [[ $state != running ]]; then
      fail "$service $role: exited before it was ready ($state)"; show_logs "$name"
    elif [[ $(readyz "$port") == 200 ]]; then
      log "$service $role: /readyz 200 after $((SECONDS - waited_from))s"
    else
      still+=("$key")
    fi
  done
  pending=("${still[@]}")
  ((${#pending[@]})) || break
  if ((SECONDS - waited_from >= DEADLINE)); then
    for key in "${pending[@]}"; do
      fail "${key/-/ }: /readyz not 200 within ${DEADLINE}s"; show_logs "${CONTAINER[$key]}"
    done
    break
  fi
  sleep 1
done

if ((${#failures[@]})); then
  log "${#failures[@]} failure(s):"
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
log "every image booted: ${SERVICES[*]}"
