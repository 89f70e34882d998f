#!/usr/bin/env bash
# Local infrastructure for Ketanmu without Docker: one Apache Kafka broker (KRaft, broker and
# controller in one JVM, jars from Maven Central) and one PostgreSQL server, both on 127.0.0.1.
#
#   deploy/local/infra.sh up|down|status|reset|kafka-restart|pg-restart|env
#
# All state lives in <repo>/.local/ (git-ignored). See deploy/local/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
LOCAL="$ROOT/.local"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_TOPIC_PARTITIONS="${KAFKA_TOPIC_PARTITIONS:-6}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-ketanmu}"
PGPASSWORD="${PGPASSWORD:-ketanmu}"
PGDATABASE="${PGDATABASE:-ketanmu}"

KAFKA_SRC="$SCRIPT_DIR/kafka"
KAFKA_POM="$KAFKA_SRC/pom.xml"
# KAFKA_HOME: this broker's state. `make test` runs its own broker (KAFKA_HOME=.local/kafka-test,
# other ports) so that the tests and a running `make run` never consume each other's events.
KAFKA_HOME="${KAFKA_HOME:-$LOCAL/kafka}"
case "$KAFKA_HOME" in /*) ;; *) KAFKA_HOME="$ROOT/$KAFKA_HOME" ;; esac
KAFKA_LIB="$LOCAL/kafka/lib"   # the jars, shared by every broker of this checkout
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_PROPS="$KAFKA_HOME/server.properties"
KAFKA_LOG="$KAFKA_HOME/kafka.log"   # written by log4j2 (deploy/local/kafka/log4j2.properties)
KAFKA_OUT="$KAFKA_HOME/kafka.out"   # the JVM's own stdout/stderr (crashes, OOM)
KAFKA_PID="$KAFKA_HOME/kafka.pid"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"

# PG_HOME: this cluster's directory. The fault tests run a second cluster beside the shared one
# (PG_HOME=.local/pg-faults and another PGPORT) so that restarting theirs disturbs no one else.
PG_HOME="${PG_HOME:-$LOCAL/pg}"
case "$PG_HOME" in /*) ;; *) PG_HOME="$ROOT/$PG_HOME" ;; esac
PG_LINK="$PG_HOME"   # PG_DIR is where it really is (see choose_pg_dir)
# Names outside the checkout (/var/tmp cluster, /tmp socket dir) are unique per cluster; the
# default cluster keeps the name it always had.
if [[ "$PG_HOME" == "$LOCAL/pg" ]]; then
  PG_TAG="$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
else
  PG_TAG="$(printf '%s' "$PG_HOME" | sha256sum | cut -c1-12)"
fi
PY="$ROOT/.venv/bin/python"

IS_ROOT=0; [[ "$(id -u)" == 0 ]] && IS_ROOT=1
APT_UPDATED=0

log() { printf '[infra] %s\n' "$*"; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- generic helpers

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Who listens on port $1 (best effort, for error messages).
port_owner() {
  local who=""
  if command -v ss >/dev/null 2>&1; then
    who="$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 || true)"
  fi
  printf '%s' "${who:-unknown process}"
}

port_taken_die() { # port, env var name, what we wanted to start
  local owner pid cmd hint=""
  owner="$(port_owner "$1")"
  pid="$(printf '%s' "$owner" | sed -n 's/.*pid=\([0-9]*\).*/\1/p')"
  if [[ -n "$pid" ]]; then
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    # The same infrastructure started from another checkout (e.g. a CI clone next to a dev tree)?
    local other
    other="$(printf '%s' "$cmd" | sed -n -e 's|.*kafka\.Kafka \(/.*\)/\.local/kafka/server\.properties.*|\1|p' \
                                          -e 's|.*postgres -D \(/.*\)/\.local/pg/data.*|\1|p')"
    if [[ -n "$other" && "$other" != "$ROOT" ]]; then
      hint=" It is the local infrastructure of another checkout: stop it with '$other/deploy/local/infra.sh down'."
    elif [[ "$cmd" == *"/ketanmu-pg-"* ]]; then
      hint=" It is the local PostgreSQL of another checkout ($(printf '%s' "$cmd" | sed -n 's/.*-D \([^ ]*\).*/\1/p'))."
    fi
  fi
  die "port $1 is already in use by something that is not our $3 ($owner).$hint Stop it, or choose another port, e.g. $2=$(( $1 + 100 )) $0 up"
}

# Alive and not a zombie (a killed child of ours stays a zombie until PID 1 reaps it).
pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local state; state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -n "$state" && "$state" != Z ]]
}

apt_install() {
  [[ $IS_ROOT == 1 ]] || die "need to install $*, but not root: install it (apt-get install $*) and rerun"
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "installing $* (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- Kafka

ensure_java() {
  local v=""
  if command -v java >/dev/null 2>&1; then
    v="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  fi
  if [[ -z "$v" || "$v" -lt 17 ]]; then
    apt_install openjdk-17-jre-headless
  fi
  command -v mvn >/dev/null 2>&1 || apt_install maven
}

ensure_kafka_jars() {
  local stamp="$KAFKA_LIB/.stamp" want
  want="kafka $KAFKA_VERSION pom-sha256 $(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  ensure_java
  local t0; t0="$(now)"
  log "downloading Apache Kafka $KAFKA_VERSION jars from Maven Central (mvn)"
  rm -rf "$KAFKA_LIB.tmp"
  # (sed: Debian's mvn prints bare colour-reset escapes even in quiet batch mode)
  mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIB.tmp" 2>&1 \
    | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' \
    || die "mvn could not fetch the Kafka jars (see the output above)"
  rm -rf "$KAFKA_LIB"
  mv "$KAFKA_LIB.tmp" "$KAFKA_LIB"
  printf '%s\n' "$want" >"$stamp"
  log "Kafka jars ready ($(ls "$KAFKA_LIB" | wc -l) jars) in $(since "$t0") s"
}

kafka_java() { # java with our classpath and logging; args = main class + args
  java -Dkafka.logs.dir="$KAFKA_HOME" \
    -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" \
    -cp "$KAFKA_LIB/*" "$@"
}

write_kafka_props() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_DATA_DIR@|$KAFKA_DATA|g" \
      "$KAFKA_SRC/server.properties.in" >"$KAFKA_PROPS"
}

format_kafka_storage() {
  [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
  local id
  id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  [[ -n "$id" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
  log "formatting Kafka storage (cluster id $id)"
  kafka_java kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_PROPS" >/dev/null \
    || die "Kafka storage format failed"
  # The controller's own endpoint is recorded at format time (dynamic quorum).
  printf '%s\n' "$KAFKA_CONTROLLER_PORT" >"$KAFKA_HOME/formatted-controller-port"
}

# Our broker's pid if it is alive and really is our Kafka, else nothing.
kafka_pid() {
  local pid
  [[ -f "$KAFKA_PID" ]] || return 0
  pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
  if pid_alive "$pid" && [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"kafka.Kafka $KAFKA_PROPS"* ]]; then
    printf '%s' "$pid"
  fi
}

# Our broker died (kill -9, OOM) but its pid file remains: a dying JVM can keep its sockets
# for a moment after the main thread is gone. Give it up to 10 s before judging the ports.
kafka_wait_dead() {
  [[ -f "$KAFKA_PID" && -z "$(kafka_pid)" ]] || return 0
  local old n; old="$(cat "$KAFKA_PID" 2>/dev/null || true)"
  for n in $(seq 100); do
    { [[ -n "$old" ]] && kill -0 "$old" 2>/dev/null; } || port_open "$KAFKA_PORT" \
      || port_open "$KAFKA_CONTROLLER_PORT" || break
    sleep 0.1
  done
  rm -f "$KAFKA_PID"
}

kafka_running_port() { # the PLAINTEXT port in the running broker's config
  sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\),.*|\1|p' "$KAFKA_PROPS" 2>/dev/null
}

require_venv() {
  [[ -x "$PY" ]] || die "$PY not found: run 'make install' first (creates the .venv), then rerun"
}

create_topics() {
  require_venv
  (cd "$ROOT" && "$PY" -m shared.kafka.admin create-topics --bootstrap "127.0.0.1:$KAFKA_PORT" \
      --partitions "$KAFKA_TOPIC_PARTITIONS") | sed 's/^/[infra] kafka /' \
    || die "creating Kafka topics failed (log: $KAFKA_LOG)"
}

# The controller's endpoint is recorded in the metadata at format time (dynamic quorum).
kafka_check_controller_port() {
  local formatted="$KAFKA_HOME/formatted-controller-port"
  if [[ -f "$KAFKA_DATA/meta.properties" && -f "$formatted" && "$(cat "$formatted")" != "$KAFKA_CONTROLLER_PORT" ]]; then
    die "Kafka storage was formatted with KAFKA_CONTROLLER_PORT=$(cat "$formatted"); use that port, or '$0 reset' to start afresh"
  fi
  return 0
}

kafka_dump_logs() {
  {
    echo "---- last 30 lines of $KAFKA_LOG"
    tail -n 30 "$KAFKA_LOG" 2>/dev/null || true
    if [[ -s "$KAFKA_OUT" ]]; then
      echo "---- last 30 lines of $KAFKA_OUT"
      tail -n 30 "$KAFKA_OUT"
    fi
  } >&2
}

kafka_start() {
  local pid
  pid="$(kafka_pid)"
  if [[ -n "$pid" ]]; then
    local running; running="$(kafka_running_port)"
    if [[ "$running" != "$KAFKA_PORT" ]]; then
      die "our Kafka (pid $pid) runs on port $running, not KAFKA_PORT=$KAFKA_PORT: run '$0 kafka-restart' to move it"
    fi
    if port_open "$KAFKA_PORT"; then
      log "Kafka already running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
      create_topics
      return 0
    fi
    log "Kafka process $pid is alive but port $KAFKA_PORT does not answer yet: waiting"
    kafka_wait_ready "$pid" "$(cat "$KAFKA_HOME/kafka.logline" 2>/dev/null || echo 0)" "$(now)"
    return 0
  fi
  kafka_wait_dead
  port_open "$KAFKA_PORT" && port_taken_die "$KAFKA_PORT" KAFKA_PORT "Kafka broker"
  port_open "$KAFKA_CONTROLLER_PORT" && port_taken_die "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT "Kafka controller"

  ensure_kafka_jars
  ensure_java
  mkdir -p "$KAFKA_DATA"
  write_kafka_props
  kafka_check_controller_port
  format_kafka_storage

  local t0 start_line=0; t0="$(now)"
  [[ -f "$KAFKA_LOG" ]] && start_line="$(wc -l <"$KAFKA_LOG")"
  printf '%s\n' "$start_line" >"$KAFKA_HOME/kafka.logline"   # where this run's log begins
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, heap $KAFKA_HEAP)"
  # setsid: own session, so a Ctrl-C or a killed process group of the caller leaves the broker
  # alone. The inner shell writes its own pid, then execs java (same pid), which stays right
  # even when setsid has to fork.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
    nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dkafka.logs.dir="$KAFKA_HOME" \
      -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" \
      -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_PROPS" \
      </dev/null >"$KAFKA_OUT" 2>&1 &
  for _ in $(seq 50); do [[ -s "$KAFKA_PID" ]] && break; sleep 0.1; done
  pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
  [[ -n "$pid" ]] || die "Kafka did not start (no pid file)"
  kafka_wait_ready "$pid" "$start_line" "$t0"
}

kafka_wait_ready() { # pid, log line to search from, start time
  local pid="$1" from="$2" t0="$3" deadline
  deadline=$(( $(date +%s) + KAFKA_START_TIMEOUT ))
  while :; do
    if [[ -f "$KAFKA_LOG" ]]; then
      local lines; lines="$(wc -l <"$KAFKA_LOG")"
      (( lines < from )) && from=0   # log rolled over meanwhile
      # (awk reads the file itself: 'tail | grep -q' fails under pipefail once grep quits early)
      if awk -v from="$from" 'NR > from && /Kafka Server started/ { found = 1; exit }
                              END { exit !found }' "$KAFKA_LOG"; then
        break
      fi
    fi
    if ! pid_alive "$pid"; then
      kafka_dump_logs
      rm -f "$KAFKA_PID"
      die "Kafka exited during start-up (see the log lines above)"
    fi
    if (( $(date +%s) >= deadline )); then
      kafka_dump_logs
      die "Kafka did not log 'Kafka Server started' within ${KAFKA_START_TIMEOUT}s (pid $pid still running; '$0 down' stops it)"
    fi
    sleep 0.3
  done
  log "Kafka started (pid $pid) in $(since "$t0") s; waiting for the protocol and creating topics"
  create_topics
  log "Kafka ready in $(since "$t0") s"
}

kafka_stop() {
  local pid; pid="$(kafka_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$KAFKA_PID"
    log "Kafka not running"
    return 0
  fi
  local t0; t0="$(now)"
  log "stopping Kafka (pid $pid, SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + KAFKA_STOP_TIMEOUT ))
  while pid_alive "$pid" && (( $(date +%s) < deadline )); do sleep 0.2; done
  if pid_alive "$pid"; then
    log "Kafka still alive after ${KAFKA_STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_alive "$pid"; do sleep 0.1; done
  fi
  # The leader thread can be a zombie while the other threads still hold the sockets.
  local n
  for n in $(seq 100); do
    port_open "$(kafka_running_port)" || port_open "$KAFKA_CONTROLLER_PORT" || break
    (( n == 100 )) && log "warning: Kafka's ports still answer after its process ended"
    sleep 0.1
  done
  rm -f "$KAFKA_PID"
  log "Kafka stopped in $(since "$t0") s"
}

kafka_status() {
  local pid; pid="$(kafka_pid)"
  if [[ -n "$pid" ]]; then
    local p; p="$(kafka_running_port)"
    if port_open "$p"; then
      log "Kafka $KAFKA_VERSION: running, pid $pid, bootstrap 127.0.0.1:$p (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT), data $KAFKA_DATA, log $KAFKA_LOG"
    else
      log "Kafka $KAFKA_VERSION: process $pid alive but port $p not answering (starting or stuck?), log $KAFKA_LOG"
    fi
  else
    local extra=""
    port_open "$KAFKA_PORT" && extra=" (but port $KAFKA_PORT is used by $(port_owner "$KAFKA_PORT"))"
    log "Kafka: not running$extra"
  fi
}

# ---------------------------------------------------------------- PostgreSQL

PG_BIN=""
PG_DIR=""
PG_DATA=""
PG_SOCK=""
PG_LOGFILE=""

find_pg_bin() {
  local want="" d
  # A cluster already initialised keeps using its own major version.
  [[ -n "$PG_DATA" && -f "$PG_DATA/PG_VERSION" ]] && want="$(cat "$PG_DATA/PG_VERSION")"
  if [[ -n "$want" ]]; then
    [[ -x "/usr/lib/postgresql/$want/bin/postgres" ]] && PG_BIN="/usr/lib/postgresql/$want/bin"
  else
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
      [[ -x "$d/postgres" ]] && PG_BIN="$d"
    done
  fi
  [[ -n "$PG_BIN" ]]
}

ensure_pg_installed() {
  find_pg_bin && return 0
  if [[ -n "$PG_DATA" && -f "$PG_DATA/PG_VERSION" ]]; then
    local v; v="$(cat "$PG_DATA/PG_VERSION")"
    ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 && \
      die "$PG_DATA was made by PostgreSQL $v, whose binaries are missing: install postgresql-$v or '$0 reset'"
  fi
  # We run our own cluster. The Debian package would create and start its own 'main' cluster
  # on port 5432: a temporary policy-rc.d forbids starting services during the install.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ $IS_ROOT == 1 && ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1
  fi
  apt_install postgresql postgresql-client || { [[ $made_policy == 1 ]] && rm -f "$policy"; die "installing postgresql failed"; }
  [[ $made_policy == 1 ]] && rm -f "$policy"
  find_pg_bin || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres found"
}

# Run a PostgreSQL binary as the cluster owner: 'postgres' when we are root (the server refuses
# to run as root), else the current user. cd / so that a root-only cwd gives no warnings.
as_pg() {
  if [[ $IS_ROOT == 1 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Where the cluster lives. Decision: by default .local/pg itself. When run as root the server runs
# as 'postgres', which must be able to traverse every parent of the repo; if it cannot (e.g. a
# clone under /root, mode 700), we do NOT loosen permissions of the user's directories; instead
# the cluster lives in /var/tmp/ketanmu-pg-<hash of repo path> and .local/pg is a symlink to it.
# Every path handed to the server is the resolved one. Decided once, kept while .local/pg exists.
choose_pg_dir() {
  mkdir -p "$LOCAL"
  if [[ ! -e "$PG_LINK" ]]; then
    if [[ $IS_ROOT == 1 ]]; then
      id postgres >/dev/null 2>&1 || { log "creating system user postgres"; useradd --system --home-dir /var/lib/postgresql --shell /bin/bash --user-group postgres; }
      if runuser -u postgres -- test -x "$LOCAL" 2>/dev/null; then
        mkdir -p "$PG_LINK"
      else
        local alt; alt="/var/tmp/ketanmu-pg-$PG_TAG"
        log "user postgres cannot reach $LOCAL: cluster goes to $alt (symlinked from .local/pg)"
        mkdir -p "$alt"
        ln -sfn "$alt" "$PG_LINK"
      fi
    else
      mkdir -p "$PG_LINK"
    fi
  fi
  PG_DIR="$(readlink -f "$PG_LINK")"
  [[ $IS_ROOT == 1 ]] && chown postgres: "$PG_DIR"
  chmod 700 "$PG_DIR"
  PG_DATA="$PG_DIR/data"
  PG_LOGFILE="$PG_DIR/pg.log"
  # Unix socket paths are limited to ~107 bytes: fall back to /tmp for very deep checkouts.
  PG_SOCK="$PG_DIR"
  if (( ${#PG_SOCK} > 80 )); then
    PG_SOCK="/tmp/ketanmu-pg-$PG_TAG"
    mkdir -p "$PG_SOCK"; [[ $IS_ROOT == 1 ]] && chown postgres: "$PG_SOCK"; chmod 700 "$PG_SOCK"
  fi
}

pg_paths_readonly() { # same variables as choose_pg_dir, without creating anything
  PG_DIR=""; PG_DATA=""
  [[ -e "$PG_LINK" ]] || return 0
  PG_DIR="$(readlink -f "$PG_LINK")"
  PG_DATA="$PG_DIR/data"
  PG_LOGFILE="$PG_DIR/pg.log"
  PG_SOCK="$PG_DIR"
  (( ${#PG_SOCK} > 80 )) && PG_SOCK="/tmp/ketanmu-pg-$PG_TAG"
  find_pg_bin || true
}

pg_initdb() {
  [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
  local t0; t0="$(now)"
  log "initialising PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}') cluster in $PG_DATA"
  local pw="$PG_DIR/superuser.pw"
  # Superuser 'postgres': trusted over the unix socket (which is inside our 0700 directory),
  # password (scram) over TCP. Its random password is kept in $PG_DIR/superuser.pw.
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$pw")
  [[ $IS_ROOT == 1 ]] && chown postgres: "$pw"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pw" -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  printf "\n# Ketanmu: local settings, regenerated at each start by deploy/local/infra.sh\ninclude_if_exists = 'ketanmu.conf'\n" \
    | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
  log "cluster initialised in $(since "$t0") s"
}

write_pg_conf() {
  as_pg tee "$PG_DATA/ketanmu.conf" >/dev/null <<EOF
# GENERATED by deploy/local/infra.sh at each start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = -1
# Statistics that keep up with fresh, fast-growing tables (a new deployment, every benchmark run,
# every test database): with the default 1 min between autovacuum rounds, the planner kept seeing
# a 150-row notifications table while it held 10,000 rows and chose sequential scans for keyed
# updates (notify's batch store: 6.1 ms -> 0.7 ms per call at 30/s with 5-10 s).
autovacuum_naptime = 10s
# per-statement CPU and call counts for the benchmark and ops (CREATE EXTENSION pg_stat_statements)
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
timezone = 'UTC'
EOF
}

# "pid port" of the running cluster from postmaster.pid, if its postmaster is alive.
pg_running() {
  [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]] || return 1
  local pid port
  pid="$(sed -n 1p "$PG_DATA/postmaster.pid")"
  port="$(sed -n 4p "$PG_DATA/postmaster.pid")"
  pid_alive "$pid" || return 1
  printf '%s %s' "$pid" "$port"
}

# After a crash, the dead postmaster named in postmaster.pid can linger as a zombie until PID 1
# reaps it; PostgreSQL's own lock check (kill -0) then refuses to start. Wait for it, briefly.
pg_wait_old_postmaster_gone() {
  [[ -f "$PG_DATA/postmaster.pid" ]] || return 0
  local old n
  old="$(sed -n 1p "$PG_DATA/postmaster.pid")"
  for n in $(seq 100); do
    kill -0 "$old" 2>/dev/null || return 0
    (( n == 1 )) && log "waiting for the dead postmaster $old to be reaped"
    sleep 0.1
  done
}

pg_psql_super() { # psql as superuser over the unix socket
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PGPORT" -U postgres -d postgres "$@"
}

pg_create_db() {
  pg_psql_super -v u="$PGUSER" -v p="$PGPASSWORD" -v d="$PGDATABASE" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'u', :'p')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'u', :'p') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'u')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'d') \gexec
SQL
  log "PostgreSQL database '$PGDATABASE' owned by '$PGUSER' ready: postgresql://$PGUSER:***@127.0.0.1:$PGPORT/$PGDATABASE"
}

pg_start() {
  choose_pg_dir
  ensure_pg_installed
  local r t0 started=0
  t0="$(now)"
  if r="$(pg_running)"; then
    local pid="${r% *}" port="${r#* }"
    [[ "$port" == "$PGPORT" ]] || die "our PostgreSQL (pid $pid) runs on port $port, not PGPORT=$PGPORT: run '$0 pg-restart' to move it"
    if as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -t 5; then
      log "PostgreSQL already running (pid $pid, 127.0.0.1:$PGPORT)"
      pg_create_db
      return 0
    fi
    log "PostgreSQL (pid $pid) is not accepting connections yet: waiting"
  fi
  local deadline=$(( $(date +%s) + 90 ))
  until as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -t 1; do
    if ! pg_running >/dev/null; then   # not started yet, or died (e.g. killed while starting)
      if [[ $started == 1 ]]; then
        tail -n 30 "$PG_LOGFILE" >&2 || true
        die "PostgreSQL exited during start-up (log: $PG_LOGFILE)"
      fi
      port_open "$PGPORT" && port_taken_die "$PGPORT" PGPORT "PostgreSQL"
      pg_initdb
      write_pg_conf
      pg_wait_old_postmaster_gone
      log "starting PostgreSQL on 127.0.0.1:$PGPORT"
      # Retried: right after a crash (kill -9) the old backends may still hold the shared memory.
      local try
      for try in 1 2 3 4; do
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOGFILE" -w -t 60 -s start 2>/dev/null && break
        if [[ $try == 4 ]]; then
          tail -n 30 "$PG_LOGFILE" >&2 || true
          die "PostgreSQL did not start (log: $PG_LOGFILE)"
        fi
        log "PostgreSQL start failed (attempt $try), retrying in 2 s"
        sleep 2
      done
      started=1
      continue
    fi
    if (( $(date +%s) >= deadline )); then
      tail -n 30 "$PG_LOGFILE" >&2 || true
      die "PostgreSQL did not answer on 127.0.0.1:$PGPORT within 90s (log: $PG_LOGFILE)"
    fi
    sleep 0.3
  done
  pg_create_db
  log "PostgreSQL ready in $(since "$t0") s"
}

pg_stop() {
  pg_paths_readonly
  if [[ -z "$PG_DATA" ]] || ! pg_running >/dev/null; then
    log "PostgreSQL not running"
    return 0
  fi
  [[ -n "$PG_BIN" ]] || die "PostgreSQL binaries not found, cannot stop $PG_DATA"
  local t0; t0="$(now)"
  log "stopping PostgreSQL (pg_ctl stop -m fast)"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop
  log "PostgreSQL stopped in $(since "$t0") s"
}

pg_status() {
  pg_paths_readonly
  local r
  if [[ -n "$PG_DATA" ]] && r="$(pg_running)"; then
    local pid="${r% *}" port="${r#* }"
    if [[ -n "$PG_BIN" ]] && as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; then
      log "PostgreSQL $(cat "$PG_DATA/PG_VERSION"): running, pid $pid, postgresql://$PGUSER:***@127.0.0.1:$port/$PGDATABASE, data $PG_DATA, log $PG_LOGFILE"
    else
      log "PostgreSQL: postmaster $pid alive but 127.0.0.1:$port not accepting connections, log $PG_LOGFILE"
    fi
  else
    local extra=""
    port_open "$PGPORT" && extra=" (but port $PGPORT is used by $(port_owner "$PGPORT"))"
    log "PostgreSQL: not running$extra"
  fi
}

# ---------------------------------------------------------------- commands

# .local/ ignores itself, whatever the repo's .gitignore says.
ensure_local_dir() {
  mkdir -p "$LOCAL"
  [[ -f "$LOCAL/.gitignore" ]] || printf '# state of deploy/local/infra.sh\n*\n' >"$LOCAL/.gitignore"
}

# Fail before starting anything when a port we need is held by someone else.
preflight_ports() {
  kafka_wait_dead
  if [[ -z "$(kafka_pid)" ]]; then
    port_open "$KAFKA_PORT" && port_taken_die "$KAFKA_PORT" KAFKA_PORT "Kafka broker"
    port_open "$KAFKA_CONTROLLER_PORT" && port_taken_die "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT "Kafka controller"
  fi
  pg_paths_readonly
  if ! pg_running >/dev/null; then
    port_open "$PGPORT" && port_taken_die "$PGPORT" PGPORT "PostgreSQL"
  fi
  return 0
}

cmd_up() {
  local t0; t0="$(now)"
  [[ -n "$KAFKA_VERSION" ]] || die "cannot read kafka.version from $KAFKA_POM"
  require_venv
  ensure_local_dir
  preflight_ports
  pg_start
  kafka_start
  log "up: all ready in $(since "$t0") s"
}

cmd_down() {
  kafka_stop
  pg_stop
}

cmd_status() {
  kafka_status
  pg_status
}

cmd_reset() {
  cmd_down
  log "deleting Kafka data and logs (keeping the jars in $KAFKA_LIB)"
  rm -rf "$KAFKA_DATA" "$KAFKA_PROPS" "$KAFKA_HOME"/kafka.log* "$KAFKA_OUT" "$KAFKA_PID" \
    "$KAFKA_HOME/formatted-controller-port"
  if [[ -e "$PG_LINK" || -L "$PG_LINK" ]]; then
    local real; real="$(readlink -f "$PG_LINK")"
    log "deleting PostgreSQL cluster $real"
    rm -rf "$real"
    rm -rf "$PG_LINK"
  fi
  rm -rf "/tmp/ketanmu-pg-$PG_TAG"
  log "reset done"
}

cmd_env() { # shell exports for clients, e.g.  eval "$(deploy/local/infra.sh env)"
  cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
export KAFKA_TOPIC_PARTITIONS=$KAFKA_TOPIC_PARTITIONS
export PGHOST=127.0.0.1 PGPORT=$PGPORT PGUSER=$PGUSER PGPASSWORD=$PGPASSWORD PGDATABASE=$PGDATABASE
export DATABASE_URL=postgresql://$PGUSER:$PGPASSWORD@127.0.0.1:$PGPORT/$PGDATABASE
EOF
}

usage() {
  cat <<EOF
usage: $0 COMMAND
  up             install what is missing, start Kafka $KAFKA_VERSION and PostgreSQL, create DB and topics
  down           stop both (data kept)
  status         what runs where
  reset          down, then delete all data and logs (downloaded jars kept)
  kafka-restart  stop and start Kafka (data kept)
  pg-restart     stop and start PostgreSQL (data kept)
  env            print shell exports for clients
env: KAFKA_HOME=$KAFKA_HOME KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT KAFKA_TOPIC_PARTITIONS=$KAFKA_TOPIC_PARTITIONS
     PG_HOME=$PG_HOME
     KAFKA_HEAP=$KAFKA_HEAP PGPORT=$PGPORT PGUSER=$PGUSER PGPASSWORD=*** PGDATABASE=$PGDATABASE
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  kafka-restart) require_venv; ensure_local_dir; kafka_check_controller_port; kafka_stop; kafka_start ;;
  pg-restart) ensure_local_dir; pg_stop; pg_start ;;
  env) cmd_env ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
