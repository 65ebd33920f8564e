#!/usr/bin/env bash
# Starts throwaway single-node brokers (fresh data directory, loopback ports)
# and runs the fleet scenarios against them: one JSON report and one SVG
# chart per scenario in $OUT, progress on stderr. The broker and the fleet
# workers are separate processes, each below the 20,000 open-files cap; the
# broker's PID is passed as --broker-pid so that its RSS and CPU are in the
# reports. Only the brokers this script started are stopped (by PID).
#
#   loadtest/scripts/run.sh [bin/gatecast]      (make loadtest)
#   PROTOCOL=mqtt loadtest/scripts/run.sh bin/gatecast   (the same scenarios with MQTT
#                                 clients over the broker's MQTT TCP listener, plus offline)
#
# Knobs (environment), with their defaults:
#   CONNS=15000 WORKERS=2        connect and churn: devices, worker processes
#   IDLE_CONNS=15000             idle: connections (the broker's heap per connection)
#   DEVICES=5000 DASHBOARDS=10   telemetry, command, revoke, mixed
#   TELEMETRY_RATE=5000 COMMAND_RATE=10 DURATION=10s
#   FANOUT_SUBS=2000 FANOUT_RATE=200 FANOUT_MESSAGES=2000
#   FANIN_PUBS=200 FANIN_RATE=50000 FANIN_MESSAGES=200000
#   SCENARIOS="idle connect telemetry command churn revoke mixed fanout fanin"
#             (PROTOCOL=mqtt: the same and offline)
#   PROTOCOL=seed                seed (WebSocket) or mqtt; MQTT_VERSION=5 (4: 3.1.1)
#   OFFLINE_DEVICES=10000        offline: devices with persistent sessions (MQTT only)
#   WS_PORT=18080 ADMIN_PORT=18081 MQTT_PORT=18883 OUT=(a new directory under /tmp)
# The broker listens for MQTT over TCP on 127.0.0.1:$MQTT_PORT only with
# PROTOCOL=mqtt; a seed run keeps --mqtt-listen "" as before.
set -euo pipefail
BIN=${1:-bin/gatecast}
WS_PORT=${WS_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-18081}
MQTT_PORT=${MQTT_PORT:-18883}
PROTOCOL=${PROTOCOL:-seed}
MQTT_VERSION=${MQTT_VERSION:-5}
OUT=${OUT:-$(mktemp -d /tmp/gatecast-loadtest-results.XXXXXX)}
mkdir -p "$OUT"
DEFAULT_SCENARIOS="idle connect telemetry command churn revoke mixed fanout fanin"
MQTT_LISTEN="" PROTO_FLAGS=()
case $PROTOCOL in
  seed) ;;
  mqtt) DEFAULT_SCENARIOS="$DEFAULT_SCENARIOS offline"
        MQTT_LISTEN=127.0.0.1:$MQTT_PORT
        PROTO_FLAGS=(--protocol mqtt --mqtt-url "tcp://$MQTT_LISTEN" --mqtt-version "$MQTT_VERSION") ;;
  *) echo "PROTOCOL must be seed or mqtt, got $PROTOCOL" >&2; exit 2 ;;
esac
SCENARIOS=${SCENARIOS:-$DEFAULT_SCENARIOS}
CONNS=${CONNS:-15000}
WORKERS=${WORKERS:-2}
DEVICES=${DEVICES:-5000}
DASHBOARDS=${DASHBOARDS:-10}
DURATION=${DURATION:-10s}

BROKER= DIR=
start_broker() {
  DIR=$(mktemp -d /tmp/gatecast-loadtest.XXXXXX)
  # A fresh admin key per broker, passed in the environment (not on the
  # command line, where ps shows it); the load tool reads the same variable.
  GATECAST_ADMIN_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')
  export GATECAST_ADMIN_KEY
  "$BIN" serve --data-dir "$DIR" --listen 127.0.0.1:$WS_PORT --admin-listen 127.0.0.1:$ADMIN_PORT --mqtt-listen "$MQTT_LISTEN" \
    --log-level warn >"$DIR/broker.log" 2>&1 &
  BROKER=$!
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:$ADMIN_PORT/healthz >/dev/null && break
    sleep 0.1
  done
  echo "# broker pid $BROKER, $(nproc) cores, data in $DIR, protocol $PROTOCOL" >&2
}
stop_broker() {
  if [ -n "$BROKER" ]; then
    kill -TERM "$BROKER" 2>/dev/null || true
    wait "$BROKER" 2>/dev/null || true
    rm -rf "$DIR"
    BROKER=
  fi
}
trap stop_broker EXIT

lt() { # lt SCENARIO [flags]: one run, report in $OUT/SCENARIO.json
  local s=$1; shift
  echo "## $s" >&2
  "$BIN" loadtest "$s" --url ws://127.0.0.1:$WS_PORT/ws/brocker/ --admin-url http://127.0.0.1:$ADMIN_PORT \
    --broker-pid "$BROKER" --chart "$OUT/$s.svg" ${PROTO_FLAGS[@]+"${PROTO_FLAGS[@]}"} "$@" | tee "$OUT/$s.json"
}

for s in $SCENARIOS; do
  case $s in
    # idle and connect measure the broker's memory per connection: each on
    # a fresh broker (a reused one is still returning the last run's memory).
    idle)      stop_broker; start_broker; lt idle --conns "${IDLE_CONNS:-15000}" --workers "$WORKERS" --hold 10s ;;
    connect)   stop_broker; start_broker; lt connect --conns "$CONNS" --workers "$WORKERS" --hold 5s ;;
    telemetry) [ -n "$BROKER" ] || start_broker
               lt telemetry --conns "$DEVICES" --dashboards "$DASHBOARDS" --rate "${TELEMETRY_RATE:-5000}" --duration "$DURATION" --workers "$WORKERS" ;;
    command)   [ -n "$BROKER" ] || start_broker
               lt command --conns "$DEVICES" --rate "${COMMAND_RATE:-10}" --duration "$DURATION" --workers "$WORKERS" ;;
    churn)     [ -n "$BROKER" ] || start_broker
               lt churn --conns "$CONNS" --workers "$WORKERS" --hold 2s --outage 1s --reconnect-jitter 2s ;;
    revoke)    [ -n "$BROKER" ] || start_broker
               lt revoke --conns "$DEVICES" --dashboards "$DASHBOARDS" --tokens 10 --revoke 2 --rate 2000 --duration "$DURATION" --workers "$WORKERS" ;;
    mixed)     [ -n "$BROKER" ] || start_broker
               lt mixed --conns "$DEVICES" --dashboards "$DASHBOARDS" --tokens 10 --revoke 1 --rate 2000 --command-rate 2 --duration "$DURATION" --workers "$WORKERS" ;;
    fanout)    [ -n "$BROKER" ] || start_broker
               lt fanout --conns "${FANOUT_SUBS:-2000}" --messages "${FANOUT_MESSAGES:-2000}" --rate "${FANOUT_RATE:-200}" ;;
    # offline reports the broker's memory with the sessions away and back:
    # a fresh broker.
    offline)   stop_broker; start_broker; lt offline --conns "${OFFLINE_DEVICES:-10000}" ;;
    fanin)     [ -n "$BROKER" ] || start_broker
               lt fanin --conns "${FANIN_PUBS:-200}" --messages "${FANIN_MESSAGES:-200000}" --rate "${FANIN_RATE:-50000}" ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
echo "# reports and charts in $OUT" >&2
