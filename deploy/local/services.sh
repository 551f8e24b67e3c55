#!/usr/bin/env bash
# The four datapolis services (HTTP API, and stream worker where there is one)
# as background processes on 127.0.0.1, against the local Kafka and PostgreSQL.
#
#   deploy/local/services.sh {migrate|start|stop|status}
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${DATAPOLIS_STATE_DIR:-$REPO/.local}"
PYTHON="${DATAPOLIS_PYTHON:-$REPO/.venv/bin/python}"
KAFKA_BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-9092}"
DATABASE_URL="${DATABASE_URL:-postgresql://datapolis:datapolis@127.0.0.1:${PG_PORT:-55432}/datapolis}"
READY_TIMEOUT="${SERVICES_READY_TIMEOUT:-90}"
DEMO_PORT="${DEMO_PORT:-8090}"

SERVICES=(catalog ingest consent notify)
declare -A PORT=(
  [catalog]="${CATALOG_PORT:-8001}" [ingest]="${INGEST_PORT:-8002}"
  [consent]="${CONSENT_PORT:-8003}" [notify]="${NOTIFY_PORT:-8004}"
)
# Services that also run a stream worker, and the port of its probes and metrics.
WORKERS=(catalog ingest consent notify)
declare -A WORKER_PORT=(
  [catalog]="${CATALOG_WORKER_PORT:-8101}" [ingest]="${INGEST_WORKER_PORT:-8102}"
  [consent]="${CONSENT_WORKER_PORT:-8103}" [notify]="${NOTIFY_WORKER_PORT:-8104}"
)

die() { echo "services.sh: $*" >&2; exit 1; }

[[ -x "$PYTHON" ]] || die "no virtual environment at $REPO/.venv; run: make install"
mkdir -p "$STATE/logs" "$STATE/run"

# Local development settings: the well-known dev secrets are accepted only
# because <SERVICE>_DEV=true; production sets real ones (see README).
service_env() {
  local name=$1 prefix=${1^^}
  printf '%s\n' \
    "${prefix}_DEV=true" \
    "${prefix}_KAFKA__BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP" \
    "${prefix}_POSTGRES__DSN=$DATABASE_URL" \
    "${prefix}_HTTP__PORT=${PORT[$name]}" \
    "${prefix}_HTTP__PUBLIC_URL=http://127.0.0.1:${PORT[$name]}"
  if [[ -n ${WORKER_PORT[$name]:-} ]]; then
    echo "${prefix}_WORKER_HTTP__PORT=${WORKER_PORT[$name]}"
  fi
  # The demo (make demo) plays the partners and the residents on this
  # machine: notify may call its webhook receiver on loopback, and consent
  # trusts the subject tokens of its residents' issuer (keys at its JWKS).
  case $name in
    notify) echo 'NOTIFY_WEBHOOKS__ALLOW_TARGETS=["127.0.0.1/32"]' ;;
    consent)
      local demo="http://127.0.0.1:$DEMO_PORT"
      printf 'CONSENT_SUBJECT_TOKEN_ISSUERS=[{"issuer": "%s/subjects", "audience": "datapolis-consent", "jwks_url": "%s/subjects/jwks.json", "jwks_cache_s": 5}]\n' \
        "$demo" "$demo"
      ;;
  esac
}

run() {  # run NAME COMMAND... with the service's environment
  local name=$1 vars
  shift
  mapfile -t vars < <(service_env "$name")
  env "${vars[@]}" "$@"
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

migrate() {
  local name
  for name in "${SERVICES[@]}"; do
    run "$name" "$PYTHON" -m "datapolis_$name" migrate >>"$STATE/logs/$name-migrate.log" 2>&1 \
      || die "migrations of $name failed; see $STATE/logs/$name-migrate.log"
  done
  echo "migrations applied (one schema per service: ${SERVICES[*]})"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_of() {  # port_of NAME ROLE: where the API, or the worker's probes, listen
  if [[ $2 == worker ]]; then echo "${WORKER_PORT[$1]}"; else echo "${PORT[$1]}"; fi
}

launch() {  # launch NAME ROLE
  local name=$1 role=$2 vars
  local pid_file="$STATE/run/$name-$role.pid" log="$STATE/logs/$name-$role.log"
  if alive "$pid_file"; then
    echo "$name $role already running (pid $(cat "$pid_file"))"
    return 0
  fi
  if port_taken "$(port_of "$name" "$role")"; then
    local setting=${name^^}_PORT
    [[ $role == worker ]] && setting=${name^^}_WORKER_PORT
    die "127.0.0.1:$(port_of "$name" "$role") is taken by another process; set $setting"
  fi
  # env, setsid and nohup each exec the next, so $! is the service's own pid
  # (through a shell function it would be a subshell's, and stop would orphan it).
  mapfile -t vars < <(service_env "$name")
  env "${vars[@]}" setsid nohup "$PYTHON" -m "datapolis_$name" "$role" >>"$log" 2>&1 </dev/null &
  echo $! >"$pid_file"
}

readyz() {  # readyz NAME ROLE: the HTTP status of its /readyz (000: no answer)
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
    "http://127.0.0.1:$(port_of "$1" "$2")/readyz" || true
}

start() {
  local name process waited=0 pending
  for name in "${SERVICES[@]}"; do launch "$name" api; done
  for name in "${WORKERS[@]}"; do launch "$name" worker; done
  printf 'waiting for the services to be ready'
  while :; do
    pending=()
    for name in "${SERVICES[@]}"; do
      [[ $(readyz "$name" api) == 200 ]] || pending+=("$name-api")
    done
    for name in "${WORKERS[@]}"; do
      [[ $(readyz "$name" worker) == 200 ]] || pending+=("$name-worker")
    done
    [[ ${#pending[@]} -eq 0 ]] && break
    if ((waited >= READY_TIMEOUT)); then
      echo
      for process in "${pending[@]}"; do
        echo "--- $process is not ready; last lines of $STATE/logs/$process.log:" >&2
        tail -n 15 "$STATE/logs/$process.log" >&2 || true
      done
      die "not ready after ${READY_TIMEOUT}s: ${pending[*]}"
    fi
    printf '.'
    sleep 1
    waited=$((waited + 1))
  done
  echo " ready"
}

stop_one() {  # stop_one PID_FILE: SIGTERM, then SIGKILL after 20 s
  local pid_file=$1 pid i
  if ! alive "$pid_file"; then rm -f "$pid_file"; return 0; fi
  pid=$(cat "$pid_file")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pid_file"
}

stop() {
  local pid_file
  shopt -s nullglob
  for pid_file in "$STATE"/run/{catalog,ingest,consent,notify}-*.pid; do stop_one "$pid_file"; done
  echo "services stopped"
}

status() {
  local name role pid_file code rc=0
  for name in "${SERVICES[@]}"; do
    for role in api worker; do
      [[ $role == worker && ! " ${WORKERS[*]} " =~ \ $name\  ]] && continue
      pid_file="$STATE/run/$name-$role.pid"
      if ! alive "$pid_file"; then
        printf '%-8s %-6s stopped\n' "$name" "$role"
        rc=3
      else
        code=$(readyz "$name" "$role")
        printf '%-8s %-6s running  pid %-7s http://127.0.0.1:%s  readyz %s\n' \
          "$name" "$role" "$(cat "$pid_file")" "$(port_of "$name" "$role")" "$code"
        [[ $code == 200 ]] || rc=1
      fi
    done
  done
  return $rc
}

case "${1:-}" in
  migrate) migrate ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {migrate|start|stop|status}" >&2; exit 2 ;;
esac
