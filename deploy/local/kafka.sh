#!/usr/bin/env bash
# Single-node Kafka (KRaft) on 127.0.0.1 for development and tests.
# There is no Docker engine on our machines, so the broker is run straight
# from the jars on Maven Central (see deploy/local/README.md).
#
#   deploy/local/kafka.sh {fetch|start|stop|status|logs [-f]}
#
# Optionally a second listener that requires what production's brokers
# require, SASL_SSL with SCRAM-SHA-512, for the tests of the clients' TLS and
# SASL settings:
#   KAFKA_SASL_SSL_PORT     its port (no such listener when unset)
#   KAFKA_SSL_KEYSTORE_PEM  PEM file: the broker's PKCS#8 private key, then its
#                           certificate chain
#   KAFKA_SCRAM_USERS       "name=password ..." SCRAM-SHA-512 users, created
#                           when the storage is formatted (the first start)
set -euo pipefail

KAFKA_VERSION=3.9.2
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${DATAPOLIS_STATE_DIR:-$REPO/.local}"
CACHE="${DATAPOLIS_CACHE:-$HOME/.cache/datapolis}/kafka-$KAFKA_VERSION"
LIBS="$CACHE/libs"
POM="$REPO/deploy/local/kafka/pom.xml"

PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
BOOTSTRAP="127.0.0.1:$PORT"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
SSL_KEYSTORE_PEM="${KAFKA_SSL_KEYSTORE_PEM:-}"
SCRAM_USERS="${KAFKA_SCRAM_USERS:-}"

CONF_DIR="$STATE/kafka"
DATA_DIR="$CONF_DIR/data"
PROPS="$CONF_DIR/server.properties"
LOG4J="$CONF_DIR/log4j.properties"
TOOLS_LOG4J="$CONF_DIR/tools-log4j.properties"
ADMIN_PROPS="$CONF_DIR/admin.properties"
CLUSTER_ID_FILE="$CONF_DIR/cluster.id"
LOG="$STATE/logs/kafka.log"
PID_FILE="$STATE/run/kafka.pid"

die() { echo "kafka.sh: $*" >&2; exit 1; }
SUDO=""; [[ $EUID -eq 0 ]] || SUDO="sudo "

# Missing tools: explain and show the fix. On a fresh CI machine (root,
# CI=true, nobody to ask) install them, which is what a human would do.
require() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local pkgs="openjdk-17-jre-headless maven"
  if [[ $EUID -eq 0 && "${CI:-}" == "true" ]]; then
    echo "kafka.sh: ${missing[*]} not found; installing $pkgs"
    apt-get update -q
    # shellcheck disable=SC2086  # $pkgs is a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade $pkgs
    for tool in "$@"; do command -v "$tool" >/dev/null || die "$tool still not found after installing $pkgs"; done
    return 0
  fi
  die "${missing[*]} not found (needs Java 17+ and Maven). Fix: ${SUDO}apt-get install -y $pkgs"
}

require_java17() {
  require java
  local major
  # 'openjdk version "17.0.15" ...' (not always line 1: JAVA_TOOL_OPTIONS
  # adds a line); Java 8 reports "1.8.0_x", i.e. major 1, which is < 17 too.
  major="$(java -version 2>&1 | sed -nE 's/.* version "([0-9]+).*/\1/p' | head -n 1)"
  [[ "${major:-0}" -ge 17 ]] ||
    die "Java ${major:-?} found, Kafka $KAFKA_VERSION needs 17+. Fix: ${SUDO}apt-get install -y openjdk-17-jre-headless"
}

# The marker records the pom's checksum: editing the pom triggers a re-fetch.
pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

fetch() {
  if [[ -f "$CACHE/fetched.ok" && "$(cat "$CACHE/fetched.ok")" == "$(pom_sum)" ]]; then
    return 0
  fi
  require_java17
  require mvn
  echo "fetching Kafka $KAFKA_VERSION jars (~50 MB, first time only) into $LIBS"
  rm -rf "$LIBS" "$CACHE/fetched.ok"
  mkdir -p "$CACHE"
  # Maven prints a line per artifact (about 400): they go to a log file, and
  # the terminal gets one line that counts the downloads as they happen.
  local mvn_log="$CACHE/maven-fetch.log" count=0 line
  : >"$mvn_log"
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$mvn_log"
    if [[ $line == *"Downloaded from"* ]]; then
      count=$((count + 1))
      [[ -t 1 ]] && printf '\r  downloaded %d artifacts' "$count"
    fi
  done < <(mvn -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS" 2>&1 || echo "MAVEN-FAILED $?")
  [[ -t 1 ]] && printf '\r'
  if grep -q '^MAVEN-FAILED' "$mvn_log"; then
    tail -n 30 "$mvn_log" >&2
    die "Maven could not fetch the Kafka jars; full log: $mvn_log"
  fi
  echo "  downloaded $count artifacts; full log: $mvn_log"
  pom_sum >"$CACHE/fetched.ok"
  echo "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1))"
}

# A Kafka command-line class on the cached jars, logging WARN to stderr.
# C1-only JIT: these short-lived JVMs start noticeably faster with it.
TOOL=(java -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  "-Dlog4j.configuration=file:$TOOLS_LOG4J" -cp "$LIBS/*")

write_config() {
  mkdir -p "$DATA_DIR" "$STATE/logs" "$STATE/run"
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ -n $SASL_SSL_PORT ]]; then
    [[ -r $SSL_KEYSTORE_PEM ]] || die "KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE_PEM (a readable PEM file)"
    listeners+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    advertised+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  # Regenerated on every start so a changed KAFKA_PORT takes effect.
  cat >"$PROPS" <<EOF
# generated by deploy/local/kafka.sh; edits are overwritten on start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
# topics are declared by the services, never created by a typo
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
EOF
  if [[ -n $SASL_SSL_PORT ]]; then
    # The broker and controller still talk PLAINTEXT to each other (one node);
    # only clients of this listener authenticate.
    cat >>"$PROPS" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$SSL_KEYSTORE_PEM
EOF
  fi
  # Broker: INFO to stdout, which start() appends to $LOG.
  cat >"$LOG4J" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
# the full config dump, per-partition load lines and thread start-ups are
# noise on a dev box (server.properties is right next to this file)
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.UnifiedLog$=WARN
log4j.logger.kafka.log.LocalLog$=WARN
log4j.logger.kafka.log.LogManager=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.cluster.Partition=WARN
log4j.logger.kafka.server.ReplicaFetcherManager=WARN
log4j.logger.kafka.server.DelayedOperationPurgatory$ExpiredOperationReaper=WARN
log4j.logger.kafka.server.ClientQuotaManager$ThrottledChannelReaper=WARN
log4j.logger.kafka.server.NodeToControllerRequestThread=WARN
log4j.logger.kafka.coordinator.group.GroupMetadataManager=WARN
EOF
  cat >"$TOOLS_LOG4J" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=%p %m (%c)%n
EOF
  # Short client timeouts: a probe against a broker that is not up yet must
  # fail in seconds, not after the 60 s admin-client default.
  cat >"$ADMIN_PROPS" <<'EOF'
request.timeout.ms=3000
default.api.timeout.ms=5000
socket.connection.setup.timeout.ms=1000
socket.connection.setup.timeout.max.ms=1000
EOF
}

# Format the storage once; meta.properties is what StorageTool leaves behind.
format_storage() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
    "${TOOL[@]}" kafka.tools.StorageTool random-uuid >"$CLUSTER_ID_FILE"
  fi
  local scram=() user
  for user in $SCRAM_USERS; do
    [[ $user == *=* ]] || die "KAFKA_SCRAM_USERS: '$user' is not name=password"
    scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]")
  done
  "${TOOL[@]}" kafka.tools.StorageTool format -t "$(cat "$CLUSTER_ID_FILE")" -c "$PROPS" \
    "${scram[@]}" >/dev/null
}

# Our broker's pid, if it is alive (a stale pid file or a recycled pid is not ours).
running_pid() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" |
    grep -qF "kafka.Kafka $PROPS" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Readiness = a real Metadata request answered by the broker, not an open port.
# (wait_ready checks the port first only so that the probe JVM does not compete
# for the CPU with a broker that is still loading classes.)
broker_ready() {
  timeout 15 "${TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" --list >/dev/null 2>&1
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  printf 'waiting for kafka on %s ' "$BOOTSTRAP"
  until port_open "$PORT" && broker_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo; echo "kafka exited during startup; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2; rm -f "$PID_FILE"; exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo; echo "kafka not ready after ${START_TIMEOUT}s; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2; exit 1
    fi
    printf '.'; sleep 1
  done
  echo " ready"
}

start() {
  local pid
  if pid="$(running_pid)"; then
    if port_open "$PORT"; then
      echo "kafka already running on $BOOTSTRAP (pid $pid)"; return 0
    fi
    wait_ready "$pid"; return 0  # a previous start is still coming up
  fi
  port_open "$PORT" && die "127.0.0.1:$PORT is taken by another process; set KAFKA_PORT"
  port_open "$CONTROLLER_PORT" && die "127.0.0.1:$CONTROLLER_PORT is taken by another process; set KAFKA_CONTROLLER_PORT"
  fetch
  require_java17
  write_config
  format_storage
  echo "starting kafka $KAFKA_VERSION (log: $LOG)"
  echo "=== $(date -Is) start" >>"$LOG"
  # setsid: the broker must outlive this shell and not get the terminal's
  # signals; the wrapper writes its own pid, then becomes the JVM via exec.
  # shellcheck disable=SC2016,SC2086  # $$ is for the inner shell; HEAP_OPTS is a word list
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    java $HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$PROPS" >>"$LOG" 2>&1 </dev/null &
  # the pid file appears as soon as the wrapper runs
  for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
  wait_ready "$(cat "$PID_FILE")"
  echo "kafka running on $BOOTSTRAP (pid $(cat "$PID_FILE"))"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"; echo "kafka not running"; return 0
  fi
  # SIGTERM makes Kafka flush and close its logs cleanly, which avoids log
  # recovery on the next start; give it 30 s before pulling the plug.
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && ((waited < 300)); do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka (pid $pid) did not stop in 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  echo "kafka stopped"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    echo "kafka running (pid $pid) on $BOOTSTRAP"
  else
    echo "kafka stopped"; exit 3
  fi
}

logs() {
  [[ -f "$LOG" ]] || die "no log yet at $LOG"
  if [[ "${1:-}" == "-f" ]]; then tail -n 100 -f "$LOG"; else tail -n 100 "$LOG"; fi
}

case "${1:-}" in
  fetch) fetch; echo "Kafka $KAFKA_VERSION jars in $LIBS" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  logs) logs "${2:-}" ;;
  *) echo "usage: $0 {fetch|start|stop|status|logs [-f]}" >&2; exit 2 ;;
esac
