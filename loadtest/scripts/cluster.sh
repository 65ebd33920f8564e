# shellcheck shell=bash
# Sourced by storm.sh and revoke.sh, not run: throwaway stores and gatecast
# nodes on loopback; every process it starts is stopped by PID on exit
# (trap) and its temporary directory removed.
#
#   stores_up                  a Redis and a Postgres (pg_stat_statements preloaded, database
#                              "gatecast"), installed with apt-get when missing (as root);
#                              sets REDIS_PORT, DSN and PSQL (an array: psql on that server)
#   nodes_init N               ports and data directories of N nodes; sets URLS, ADMINS,
#                              MQTT_URLS (MQTT listeners only with WITH_MQTT=1)
#   start_nodes BINARY TAG     the N nodes: cluster mode on the stores once stores_up ran,
#                              else (N=1) one SQLite node; logs in $OUT/TAG-nodeK.log
#   wait_healthy               /healthz of each node
#   stop_nodes                 SIGTERM to every node, then wait for each by PID
# The caller sets OUT (a directory) and may set BROKER_FLAGS and WITH_MQTT.
read -r -a BROKER_EXTRA <<<"${BROKER_FLAGS:-}"
WITH_MQTT=${WITH_MQTT:-0}
DSN=

log() { echo "# $(date +%T.%3N) $*" >&2; }

# ---- what we start, stopped on exit by PID ----
TMP=$(mktemp -d /tmp/gatecast-lt.XXXXXX)
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
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: $* missing and not root: apt-get install $*" >&2; exit 2; }
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

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

stores_up() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || install_pkgs redis-server
  [ -n "$(pg_bindir)" ] || install_pkgs postgresql
  PGBIN=$(pg_bindir)
  free_port; REDIS_PORT=$PORT
  mkdir -p "$TMP/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis" \
    --protected-mode yes --daemonize no --logfile "$TMP/redis/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "cluster.sh: redis did not start" >&2; cat "$TMP/redis/redis.log" >&2; exit 1; }
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
    -c max_connections=300 -c shared_buffers=128MB -c autovacuum=off \
    -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all >"$PGDIR/postgres.log" 2>&1 &
  PG_RUNNER=$!
  PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1)
  for _ in $(seq 300); do
    [ -f "$PGDIR/data/postmaster.pid" ] && "${PSQL[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  PG_PID=$(head -1 "$PGDIR/data/postmaster.pid" 2>/dev/null || true)
  [ -n "$PG_PID" ] || { echo "cluster.sh: postgres did not start" >&2; cat "$PGDIR/postgres.log" >&2; exit 1; }
  "${PSQL[@]}" -d postgres -c 'CREATE DATABASE gatecast'
  "${PSQL[@]}" -d gatecast -c 'CREATE EXTENSION pg_stat_statements'
  DSN="postgres://postgres@127.0.0.1:$PG_PORT/gatecast?sslmode=disable"
  log "postgres $("$PGBIN/postgres" --version | awk '{print $3}') pid $PG_PID on 127.0.0.1:$PG_PORT"
}

# ---- the nodes ----
GATECAST_ADMIN_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')
export GATECAST_ADMIN_KEY # the nodes and the load tool read it; never on a command line
NODES=${NODES:-1}
WS_PORTS=() ADMIN_PORTS=() MQTT_PORTS=()
URLS= ADMINS= MQTT_URLS=
nodes_init() {
  local k
  NODES=$1
  for k in $(seq "$NODES"); do
    free_port; WS_PORTS+=("$PORT")
    free_port; ADMIN_PORTS+=("$PORT")
    if [ "$WITH_MQTT" = 1 ]; then free_port; MQTT_PORTS+=("$PORT"); fi
    mkdir -p "$TMP/n$k"
  done
  for k in $(seq 0 $((NODES - 1))); do
    URLS+=${URLS:+,}ws://127.0.0.1:${WS_PORTS[$k]}/ws/brocker/
    ADMINS+=${ADMINS:+,}http://127.0.0.1:${ADMIN_PORTS[$k]}
    if [ "$WITH_MQTT" = 1 ]; then MQTT_URLS+=${MQTT_URLS:+,}tcp://127.0.0.1:${MQTT_PORTS[$k]}; fi
  done
}
start_nodes() { # start_nodes BINARY TAG
  local b=$1 tag=$2 k mq store
  for k in $(seq 0 $((NODES - 1))); do
    mq=""
    [ "$WITH_MQTT" = 1 ] && mq=127.0.0.1:${MQTT_PORTS[$k]}
    store=()
    [ -n "$DSN" ] && store=(--store "$DSN" --redis "127.0.0.1:$REDIS_PORT" --node-id "n$((k + 1))")
    "$b" serve ${store[@]+"${store[@]}"} \
      --listen "127.0.0.1:${WS_PORTS[$k]}" --admin-listen "127.0.0.1:${ADMIN_PORTS[$k]}" --mqtt-listen "$mq" \
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
      { echo "cluster.sh: node $((k + 1)) is not healthy" >&2; tail -20 "$OUT"/*-node$((k + 1)).log >&2; exit 1; }
  done
}
