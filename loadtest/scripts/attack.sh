#!/usr/bin/env bash
# Hostile-client scenarios (issue 9) against throwaway brokers: a fresh
# broker per run (default configuration, random loopback ports, a temporary
# --data-dir, a fresh admin key), its PID passed as --broker-pid,
# stopped by that PID afterwards. One JSON report per run in $OUT, the
# human table on stderr.
#
#   loadtest/scripts/attack.sh [BROKER] [HARNESS]
#
#   BROKER   the gatecast binary attacked (default bin/gatecast)
#   HARNESS  the gatecast binary whose `loadtest` drives the attack
#            (default: BROKER; give a newer one to attack an old broker
#            that lacks these scenarios)
#
# Knobs (environment), with their defaults:
#   SCENARIOS="flood flood-valid tagstorm grants"   flood-valid = flood --valid-token
#   RUNS=1                each scenario this many times, a fresh broker each
#   OUT=(a new directory under /tmp)
#   FLOOD_FLAGS=""  FLOOD_VALID_FLAGS="--frame publish"  TAGSTORM_FLAGS=""  GRANTS_FLAGS=""
#                         extra flags per scenario (e.g. FLOOD_FLAGS="--conns 2")
#   BROKER_FLAGS=""       extra flags for `gatecast serve` (default: none, the
#                         default configuration)
#
# The defaults are the attacks: flood 4 connections for 10 s (RSS
# ceiling 4 GiB), tagstorm 50 loops × 1,100 tags, grants 10,000 grants.
set -euo pipefail
BROKER=${1:-bin/gatecast}
HARNESS=${2:-$BROKER}
SCENARIOS=${SCENARIOS:-flood flood-valid tagstorm grants}
RUNS=${RUNS:-1}
OUT=${OUT:-$(mktemp -d /tmp/gatecast-attack-results.XXXXXX)}
mkdir -p "$OUT"
BROKER=$(readlink -f "$BROKER")
HARNESS=$(readlink -f "$HARNESS")

PID= DIR= WS= ADMIN=
start_broker() {
  DIR=$(mktemp -d /tmp/gatecast-attack.XXXXXX)
  # A fresh admin key per broker, in the environment (not on the command
  # line, where ps shows it); the load tool reads the same variable.
  GATECAST_ADMIN_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')
  export GATECAST_ADMIN_KEY
  # shellcheck disable=SC2086
  "$BROKER" serve --data-dir "$DIR" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 ${BROKER_FLAGS:-} \
    >"$DIR/broker.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    WS=$(sed -n 's/.*WebSocket (seed protocol): *\(ws:[^ ]*\).*/\1/p' "$DIR/broker.log" | head -1)
    ADMIN=$(sed -n 's/.*Admin API, \/metrics: *\(http:[^ ]*\).*/\1/p' "$DIR/broker.log" | head -1)
    if [ -n "$WS" ] && [ -n "$ADMIN" ] && curl -sf "$ADMIN/healthz" >/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$WS" ] || [ -z "$ADMIN" ]; then
    echo "broker did not start:" >&2; cat "$DIR/broker.log" >&2; exit 1
  fi
  echo "# broker $BROKER pid $PID, $WS, $ADMIN, $(nproc) cores, data in $DIR" >&2
}
stop_broker() {
  if [ -n "$PID" ]; then
    kill -TERM "$PID" 2>/dev/null || true
    # A broker still working through a flood's backlog may not stop in
    # time: after 15 s, kill it (this PID only).
    for _ in $(seq 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    local log_size
    log_size=$(stat -c %s "$DIR/broker.log" 2>/dev/null || echo 0)
    echo "# broker log: $log_size bytes" >&2
    cp "$DIR/broker.log" "$OUT/broker-$1.log" 2>/dev/null || true
    rm -rf "$DIR"
    PID=
  fi
}
trap 'stop_broker aborted' EXIT

for s in $SCENARIOS; do
  for run in $(seq "$RUNS"); do
    name=$s-$run
    start_broker
    echo "## $name" >&2
    args=(--url "$WS" --admin-url "$ADMIN" --broker-pid "$PID")
    status=0
    case $s in
      # shellcheck disable=SC2086
      flood)       "$HARNESS" loadtest flood "${args[@]}" ${FLOOD_FLAGS:-} >"$OUT/$name.json" || status=$? ;;
      # shellcheck disable=SC2086
      flood-valid) "$HARNESS" loadtest flood --valid-token "${args[@]}" ${FLOOD_VALID_FLAGS:---frame publish} >"$OUT/$name.json" || status=$? ;;
      # shellcheck disable=SC2086
      tagstorm)    "$HARNESS" loadtest tagstorm "${args[@]}" ${TAGSTORM_FLAGS:-} >"$OUT/$name.json" || status=$? ;;
      # shellcheck disable=SC2086
      grants)      "$HARNESS" loadtest grants --cleanup=false "${args[@]}" ${GRANTS_FLAGS:-} >"$OUT/$name.json" || status=$? ;;
      *) echo "unknown scenario $s" >&2; exit 2 ;;
    esac
    [ "$status" = 0 ] || echo "# $name exited $status (report kept)" >&2
    stop_broker "$name"
  done
done
echo "# reports in $OUT" >&2
