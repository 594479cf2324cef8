#!/usr/bin/env bash
# The test broker: nisshi (Kafka-compatible, in memory) on 127.0.0.1 and a free port.
#   broker.sh install              build nisshi once into the cache, if missing
#   broker.sh start                start it; prints KAFKA_BROKER=127.0.0.1:PORT
#   broker.sh stop                 stop the broker started by `start`
#   broker.sh topic NAME [PARTS]   create a topic
#   broker.sh run CMD...           start, run CMD with KAFKA_BROKER set, stop (even on failure)
set -euo pipefail

NISSHI_VERSION=0.8.1
CACHE="${WASM_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasm-kafka}"
NISSHI="$CACHE/nisshi-$NISSHI_VERSION/bin/nisshi"
STATE="${BROKER_STATE:-${TMPDIR:-/tmp}/wasm-kafka-broker.$(id -u)}"

install() {
  [ -x "$NISSHI" ] && return 0
  echo "building nisshi $NISSHI_VERSION (about 10 minutes on 2 cores, once)..." >&2
  cargo install nisshi --version "$NISSHI_VERSION" --locked --root "$CACHE/nisshi-$NISSHI_VERSION" >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  install
  mkdir -p "$STATE"
  local port; port=$(free_port)
  # Its own empty working directory: nisshi reads a .env file from there if one exists.
  (cd "$STATE" && exec "$NISSHI" broker --silent \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "memory://wasm-kafka-$port/" \
      --group-initial-rebalance-delay 0s >"$STATE/broker.log" 2>&1) &
  echo $! >"$STATE/pid"
  echo "127.0.0.1:$port" >"$STATE/addr"
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "KAFKA_BROKER=127.0.0.1:$port"
      return 0
    fi
    kill -0 "$(cat "$STATE/pid")" 2>/dev/null || { cat "$STATE/broker.log" >&2; echo "broker exited" >&2; return 1; }
    sleep 0.1
  done
  echo "broker did not answer on 127.0.0.1:$port" >&2
  stop
  return 1
}

stop() {
  [ -f "$STATE/pid" ] || return 0
  kill "$(cat "$STATE/pid")" 2>/dev/null || true
  rm -f "$STATE/pid" "$STATE/addr"
}

topic() {
  local addr; addr=$(cat "$STATE/addr")
  "$NISSHI" topic create "$1" --partitions "${2:-3}" --broker "tcp://$addr" --silent
}

run() {
  # A private state folder: runs side by side never stop each other's broker.
  STATE=$(mktemp -d "${TMPDIR:-/tmp}/wasm-kafka-run.XXXXXX")
  trap 'stop; rm -rf "$STATE"' EXIT
  start >/dev/null
  # The command's own `broker.sh topic` calls must find this broker, not the default one.
  BROKER_STATE="$STATE" KAFKA_BROKER=$(cat "$STATE/addr") "$@"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  install|start|stop|topic|run) "$cmd" "$@" ;;
  *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
