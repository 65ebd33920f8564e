#!/usr/bin/env bash
# Revocation latency per kind of rights change (gatecast loadtest revoke
# --kinds …) against throwaway brokers on this machine: one SQLite node
# (NODES=1, the default) or a cluster of NODES nodes sharing a throwaway
# Redis and Postgres (cluster.sh), where every change goes through the
# revocation barrier. Every node listens for MQTT too: the downgrade kind
# runs with MQTT 5 clients (a seed client is never told a publish was
# refused). One JSON report per run (an array, one report per kind) and the
# table per run land in $OUT; the tables are printed at the end.
#
#   loadtest/scripts/revoke.sh [BIN]                        (default bin/gatecast)
#   NODES=3 loadtest/scripts/revoke.sh bin/gatecast          (3 nodes, the barrier)
#   DEVICES=19000 UNAFFECTED=200 BROKER_FLAGS="--fd-reserve 100" loadtest/scripts/revoke.sh bin/gatecast
#       (19,000 sessions on one node: with the default --fd-reserve, 5 % of this machine's
#        20,000 open files, a node stops accepting at ~18,970 connections)
#
# Knobs (environment), with their defaults:
#   NODES=1 DEVICES=2000 UNAFFECTED=(10 % of DEVICES) KINDS=all RUNS=1 WORKERS=0 (auto)
#   REVOKE_FLAGS= (more flags for `loadtest revoke`) BROKER_FLAGS= OUT=(a new directory under /tmp)
# Only the processes this script started are stopped, by PID.
set -euo pipefail
BIN=${1:-bin/gatecast}
NODES=${NODES:-1}
DEVICES=${DEVICES:-2000}
UNAFFECTED=${UNAFFECTED:-0}
KINDS=${KINDS:-all}
RUNS=${RUNS:-1}
WORKERS=${WORKERS:-0}
OUT=${OUT:-$(mktemp -d /tmp/gatecast-revoke-results.XXXXXX)}
mkdir -p "$OUT"
read -r -a REVOKE_EXTRA <<<"${REVOKE_FLAGS:-}"
[ -x "$BIN" ] || { echo "revoke.sh: $BIN is not an executable" >&2; exit 2; }
WITH_MQTT=1
. "$(dirname "$0")/cluster.sh"
[ "$NODES" -gt 1 ] && stores_up
nodes_init "$NODES"
start_nodes "$BIN" revoke
wait_healthy
log "$NODES node(s) of $BIN (pids ${NODE_PIDS[*]}), $(nproc) cores; $DEVICES affected sessions per kind"
RC=0
for run in $(seq "$RUNS"); do
  log "run $run: revoke --kinds $KINDS"
  "$BIN" loadtest revoke --kinds "$KINDS" --devices "$DEVICES" --unaffected "$UNAFFECTED" --workers "$WORKERS" \
    --url "$URLS" --mqtt-url "$MQTT_URLS" --admin-url "$ADMINS" --quiet ${REVOKE_EXTRA[@]+"${REVOKE_EXTRA[@]}"} \
    >"$OUT/revoke-$run.json" 2>"$OUT/revoke-$run.log" || RC=$?
done
echo >&2
for run in $(seq "$RUNS"); do
  echo "## run $run: $NODES node(s), $DEVICES sessions, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  grep -v '^revoke ' "$OUT/revoke-$run.log" >&2 || true
done
log "reports and logs in $OUT"
exit $RC
