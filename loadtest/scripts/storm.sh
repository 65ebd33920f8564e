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
#       runs the storm with OLD_BIN's nodes first, then with BIN's on the same
#       Redis and Postgres (the same tokens), after FLUSHALL, pg_stat_reset()
#       and pg_stat_statements_reset(), so that both are compared on one run
#       (first: an older binary refuses a schema that a newer one migrated)
#
# Knobs (environment), with their defaults:
#   N=15000 WORKERS=2 NODES=3     devices (= tokens), load-tool worker processes, nodes
#   OUT=(a new directory under /tmp)
#   HARNESS=$BIN                  the gatecast binary whose `loadtest storm` drives the run
#                                 (an OLD_BIN from before the scenario existed only serves)
#   STORM_FLAGS=                  more flags for `loadtest storm`
#   WITH_MQTT=0                   1: the nodes listen for MQTT too and the devices speak MQTT 5
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
read -r -a STORM_EXTRA <<<"${STORM_FLAGS:-}"
for b in "$BIN" "$HARNESS" ${OLD_BIN:+"$OLD_BIN"}; do
  [ -x "$b" ] || { echo "storm.sh: $b is not an executable" >&2; exit 2; }
done

. "$(dirname "$0")/cluster.sh"
stores_up
nodes_init "$NODES"

# storm BINARY TAG: NODES nodes of BINARY, the fleet, a restart, the report.
storm() {
  local b=$1 tag=$2 ready=$TMP/ready-$2 rc=0
  start_nodes "$b" "$tag"
  wait_healthy
  log "$tag: $NODES nodes of $b (pids ${NODE_PIDS[*]}); $N devices over $WORKERS workers"
  local proto=()
  [ "$WITH_MQTT" = 1 ] && proto=(--protocol mqtt --mqtt-url "$MQTT_URLS")
  "$HARNESS" loadtest storm --devices "$N" --workers "$WORKERS" --url "$URLS" --admin-url "$ADMINS" ${proto[@]+"${proto[@]}"} \
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

# An older binary cannot open a schema a newer one migrated (it refuses a
# schema version it does not know), so OLD_BIN runs first: the same stores,
# the same tokens, a Redis flush and fresh statistics in between.
reset_stores() {
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
  "${PSQL[@]}" -d gatecast -c 'SELECT pg_stat_reset()' -c 'SELECT pg_stat_statements_reset()' >/dev/null
  log "redis flushed, postgres statistics reset"
}
RC=0
if [ -n "$OLD_BIN" ]; then
  storm "$OLD_BIN" old || RC=$?
  stop_nodes
  reset_stores
fi
storm "$BIN" new || RC=$?
echo >&2
for tag in ${OLD_BIN:+old} new; do
  echo "## $tag ($([ $tag = new ] && echo "$BIN" || echo "$OLD_BIN")), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  sed -n '/^== gatecast loadtest storm/,$p' "$OUT/storm-$tag.log" >&2
done
log "reports, logs and tables in $OUT"
exit $RC
