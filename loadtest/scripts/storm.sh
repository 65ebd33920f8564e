#!/usr/bin/env bash
# A reconnect storm on a cold cluster (gatecast loadtest storm), end to end on
# one machine: a throwaway Redis and a throwaway Postgres (temporary
# directories, loopback, random free ports; installed with apt-get when
# missing and we are root), NODES gatecast nodes sharing them, N devices
# with N tokens connected round robin; once the scenario says ready every
# node is restarted (SIGTERM, wait by PID, start again with the same flags:
# all caches cold) and the devices reconnect at once. The scenario's JSON
# report and table land in $OUT; its table is printed at the end.
#
#   loadtest/scripts/storm.sh [BIN]                 (BIN: the gatecast binary, default bin/gatecast)
#   N=2000 loadtest/scripts/storm.sh /tmp/gatecast-base
#   OLD_BIN=/tmp/gatecast-old loadtest/scripts/storm.sh bin/gatecast
#       runs the storm a second time with OLD_BIN's nodes on the same Redis
#       and Postgres (the same tokens), after FLUSHALL and pg_stat_reset(),
#       so that both are compared on one run
#
# Knobs (environment), with their defaults:
#   N=15000 WORKERS=2 NODES=3     devices (= tokens), load-tool worker processes, nodes
#   OUT=(a new directory under /tmp)
#   HARNESS=$BIN                  the gatecast binary whose `loadtest storm` drives the run
#                                 (an OLD_BIN from before the scenario existed only serves)
#   STORM_FLAGS=                  more flags for `loadtest storm` (e.g. --protocol mqtt needs
#                                 BROKER_FLAGS with --mqtt-listen: not wired here)
#   BROKER_FLAGS=                 more flags for every `serve`
#   READY_TIMEOUT=900             seconds to wait for the fleet to be connected
# Only the processes this script started are stopped, by PID; the temporary
# directories are removed on exit.
set -euo pipefail
BIN=${1:-bin/gatecast}
HARNESS=${HARNESS:-$BIN}
OLD_BIN=${OLD_BIN:-}
N=${N:-15000}
WORKERS=${WORKERS:-2}
NODES=${NODES:-3}
READY_TIMEOUT=${READY_TIMEOUT:-900}
OUT=${OUT:-$(mktemp -d /tmp/gatecast-storm-results.XXXXXX)}
mkdir -p "$OUT"
read -r -a BROKER_EXTRA <<<"${BROKER_FLAGS:-}"
read -r -a STORM_EXTRA <<<"${STORM_FLAGS:-}"
for b in "$BIN" "$HARNESS" ${OLD_BIN:+"$OLD_BIN"}; do
  [ -x "$b" ] || { echo "storm.sh: $b is not an executable" >&2; exit 2; }
done

log() { echo "# $(date +%T.%3N) $*" >&2; }

# ---- what we start, stopped on exit by PID ----
TMP=$(mktemp -d /tmp/gatecast-storm.XXXXXX)
chmod 755 "$TMP"
REDIS_PID= PG_PID= PG_RUNNER= LT_PID=
NODE_PIDS=()
stop_pid() { # stop_pid PID [SIGNAL] [SECONDS]: signal, wait up to SECONDS, then SIGKILL
  local pid=$1 sig=${2:-TERM} secs=${3:-20}
  [ -n "$pid" ] || return 0
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid" TERM 30; wait "$pid" 2>/dev/null || true; done
  NODE_PIDS=()
}
cleanup() {
  set +e
  [ -n "$LT_PID" ] && { stop_pid "$LT_PID" INT 30; wait "$LT_PID" 2>/dev/null; }
  stop_nodes
  [ -n "$PG_PID" ] && stop_pid "$PG_PID" INT 20
  [ -n "$PG_RUNNER" ] && wait "$PG_RUNNER" 2>/dev/null
  [ -n "$REDIS_PID" ] && { stop_pid "$REDIS_PID" TERM 10; wait "$REDIS_PID" 2>/dev/null; }
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- Redis and Postgres, installed when missing ----
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -1)
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null && command -v postgres >/dev/null; then dirname "$(command -v initdb)"; fi
}
install_pkgs() {
  [ "$(id -u)" = 0 ] || { echo "storm.sh: $* missing and not root: apt-get install $*" >&2; exit 2; }
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || install_pkgs redis-server
[ -n "$(pg_bindir)" ] || install_pkgs postgresql
PGBIN=$(pg_bindir)

# Ports below the ephemeral range (32768-60999 here), so that no outgoing
# connection holds one; free_port sets PORT (not a subshell: USED must grow).
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
USED=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    case $USED in *" $p "*) continue ;; esac
    if port_free "$p"; then USED="$USED$p "; PORT=$p; return; fi
  done
}

free_port; REDIS_PORT=$PORT
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis" \
  --protected-mode yes --daemonize no --logfile "$TMP/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "storm.sh: redis did not start" >&2; cat "$TMP/redis/redis.log" >&2; exit 1; }
log "redis $(redis-server --version | awk '{print $3}') pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"

# Postgres refuses to run as root: then it runs as the postgres OS user
# (initdb and postgres under runuser), as internal/testserver does.
AS_PG=()
[ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
free_port; PG_PORT=$PORT
PGDIR=$TMP/pg
mkdir -p "$PGDIR"
[ "$(id -u)" = 0 ] && chown postgres: "$PGDIR"
chmod 700 "$PGDIR"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust --no-sync --encoding=UTF8 --locale=C >"$PGDIR/initdb.log" 2>&1 ||
  { cat "$PGDIR/initdb.log" >&2; exit 1; }
"${AS_PG[@]}" "$PGBIN/postgres" -D "$PGDIR/data" -p "$PG_PORT" -h 127.0.0.1 -k "$PGDIR" \
  -c unix_socket_permissions=0700 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c max_connections=300 -c shared_buffers=128MB \
  -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all >"$PGDIR/postgres.log" 2>&1 &
PG_RUNNER=$!
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1)
for _ in $(seq 300); do
  [ -f "$PGDIR/data/postmaster.pid" ] && "${PSQL[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done
PG_PID=$(head -1 "$PGDIR/data/postmaster.pid" 2>/dev/null || true)
[ -n "$PG_PID" ] || { echo "storm.sh: postgres did not start" >&2; cat "$PGDIR/postgres.log" >&2; exit 1; }
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE gatecast'
"${PSQL[@]}" -d gatecast -c 'CREATE EXTENSION pg_stat_statements'
DSN="postgres://postgres@127.0.0.1:$PG_PORT/gatecast?sslmode=disable"
log "postgres $("$PGBIN/postgres" --version | awk '{print $3}') pid $PG_PID on 127.0.0.1:$PG_PORT"

# ---- the nodes ----
GATECAST_ADMIN_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')
export GATECAST_ADMIN_KEY # the nodes and the load tool read it; never on a command line
WS_PORTS=() ADMIN_PORTS=()
for k in $(seq "$NODES"); do
  free_port; WS_PORTS+=("$PORT")
  free_port; ADMIN_PORTS+=("$PORT")
  mkdir -p "$TMP/n$k"
done
URLS= ADMINS=
for k in $(seq 0 $((NODES - 1))); do
  URLS+=${URLS:+,}ws://127.0.0.1:${WS_PORTS[$k]}/ws/brocker/
  ADMINS+=${ADMINS:+,}http://127.0.0.1:${ADMIN_PORTS[$k]}
done
start_nodes() { # start_nodes BINARY TAG
  local b=$1 tag=$2 k
  for k in $(seq 0 $((NODES - 1))); do
    "$b" serve --store "$DSN" --redis "127.0.0.1:$REDIS_PORT" --node-id "n$((k + 1))" \
      --listen "127.0.0.1:${WS_PORTS[$k]}" --admin-listen "127.0.0.1:${ADMIN_PORTS[$k]}" --mqtt-listen "" \
      --data-dir "$TMP/n$((k + 1))" --log-level warn ${BROKER_EXTRA[@]+"${BROKER_EXTRA[@]}"} >>"$OUT/$tag-node$((k + 1)).log" 2>&1 &
    NODE_PIDS+=($!)
  done
}
wait_healthy() {
  local k
  for k in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:${ADMIN_PORTS[$k]}/healthz" >/dev/null && break
      sleep 0.1
    done
    curl -sf "http://127.0.0.1:${ADMIN_PORTS[$k]}/healthz" >/dev/null ||
      { echo "storm.sh: node $((k + 1)) is not healthy" >&2; tail -20 "$OUT"/*-node$((k + 1)).log >&2; exit 1; }
  done
}

# storm BINARY TAG: NODES nodes of BINARY, the fleet, a restart, the report.
storm() {
  local b=$1 tag=$2 ready=$TMP/ready-$2 rc=0
  start_nodes "$b" "$tag"
  wait_healthy
  log "$tag: $NODES nodes of $b (pids ${NODE_PIDS[*]}); $N devices over $WORKERS workers"
  "$HARNESS" loadtest storm --devices "$N" --workers "$WORKERS" --url "$URLS" --admin-url "$ADMINS" \
    --redis-addr "127.0.0.1:$REDIS_PORT" --pg-dsn "$DSN" --tokens-file "$TMP/tokens.json" --ready-file "$ready" \
    --quiet ${STORM_EXTRA[@]+"${STORM_EXTRA[@]}"} >"$OUT/storm-$tag.json" 2>"$OUT/storm-$tag.log" &
  LT_PID=$!
  for _ in $(seq $((READY_TIMEOUT * 10))); do
    [ -f "$ready" ] && break
    kill -0 "$LT_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -f "$ready" ]; then
    echo "storm.sh: $tag: the fleet did not get ready" >&2
    tail -30 "$OUT/storm-$tag.log" >&2
    return 1
  fi
  log "$tag: ready; restarting the nodes"
  local old=("${NODE_PIDS[@]}")
  stop_nodes
  log "$tag: nodes ${old[*]} stopped; starting them again"
  start_nodes "$b" "$tag"
  log "$tag: nodes started (pids ${NODE_PIDS[*]})"
  wait "$LT_PID" || rc=$?
  LT_PID=
  log "$tag: storm done (exit $rc); report $OUT/storm-$tag.json"
  return $rc
}

RC=0
storm "$BIN" new || RC=$?
if [ -n "$OLD_BIN" ]; then
  stop_nodes
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
  "${PSQL[@]}" -d gatecast -c 'SELECT pg_stat_reset()' -c 'SELECT pg_stat_statements_reset()' >/dev/null
  log "redis flushed, postgres statistics reset; the same storm with $OLD_BIN"
  storm "$OLD_BIN" old || RC=$?
fi
echo >&2
for tag in new ${OLD_BIN:+old}; do
  echo "## $tag ($([ $tag = new ] && echo "$BIN" || echo "$OLD_BIN")), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  sed -n '/^== gatecast loadtest storm/,$p' "$OUT/storm-$tag.log" >&2
done
log "reports, logs and tables in $OUT"
exit $RC
