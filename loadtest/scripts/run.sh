#!/usr/bin/env bash
# Starts a throwaway single-node broker (fresh data directory, loopback
# ports) and runs the load scenarios against it, one JSON report each.
# The broker and the load generator are separate processes, each below
# the 20,000 open-files cap. Only the broker this script started is stopped.
#
#   loadtest/scripts/run.sh [bin/gatecast]      (make loadtest)
# Knobs (environment): IDLE_CONNS=15000 FANOUT_SUBS=2000 FANOUT_RATE=200
#   FANOUT_MESSAGES=2000 FANIN_PUBS=200 FANIN_RATE=50000 FANIN_MESSAGES=200000
#   REVOKE_CONNS=2000 WS_PORT=18080 ADMIN_PORT=18081
set -euo pipefail
BIN=${1:-bin/gatecast}
DIR=$(mktemp -d /tmp/gatecast-loadtest.XXXXXX)
WS_PORT=${WS_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-18081}
"$BIN" serve --data-dir "$DIR" --listen 127.0.0.1:$WS_PORT --admin-listen 127.0.0.1:$ADMIN_PORT \
  --log-level warn >"$DIR/broker.log" 2>&1 &
BROKER=$!
trap 'kill -TERM $BROKER 2>/dev/null; wait $BROKER 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do [ -s "$DIR/admin.key" ] && curl -sf http://127.0.0.1:$ADMIN_PORT/healthz >/dev/null && break; sleep 0.1; done
export GATECAST_ADMIN_KEY=$(cat "$DIR/admin.key")
LT=("$BIN" loadtest)
URL=(--url ws://127.0.0.1:$WS_PORT/ws/brocker/ --admin-url http://127.0.0.1:$ADMIN_PORT)
echo "# broker pid $BROKER, $(nproc) cores"
# idle first: it reads the broker's memory before and after connecting
"${LT[@]}" idle   "${URL[@]}" --conns "${IDLE_CONNS:-15000}" --hold 10s
"${LT[@]}" fanout "${URL[@]}" --conns "${FANOUT_SUBS:-2000}" --messages "${FANOUT_MESSAGES:-2000}" --rate "${FANOUT_RATE:-200}"
"${LT[@]}" fanin  "${URL[@]}" --conns "${FANIN_PUBS:-200}" --messages "${FANIN_MESSAGES:-200000}" --rate "${FANIN_RATE:-50000}"
"${LT[@]}" revoke "${URL[@]}" --conns "${REVOKE_CONNS:-2000}"
