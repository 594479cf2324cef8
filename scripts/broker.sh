#!/usr/bin/env bash
# The test broker: nisshi (Kafka-compatible, in memory) on 127.0.0.1 and a free port.
#   broker.sh install [--background]  build nisshi once into the cache, if missing (in the
#                                     background: its log in the cache, `install` waits for it)
#   broker.sh start                start it; prints KAFKA_BROKER=127.0.0.1:PORT
#   broker.sh stop                 stop the broker started by `start`
#   broker.sh topic NAME [PARTS]   create a topic
#   broker.sh run CMD...           start, run CMD with KAFKA_BROKER set, stop (even on failure)
set -euo pipefail

NISSHI_VERSION=0.8.1
# Only the storage engines the tests use: memory:// (dynostore) and sqlite:// (libsql, the
# durable broker of the soak and the SASL tests). nisshi's defaults add postgres; its
# telemetry exporters are not optional. The folder names the features, so that a build
# with other features is never taken for this one.
NISSHI_FEATURES=dynostore,libsql
CACHE="${WASM_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasm-kafka}"
NISSHI_ROOT="$CACHE/nisshi-$NISSHI_VERSION-${NISSHI_FEATURES//,/-}"
NISSHI="$NISSHI_ROOT/bin/nisshi"
BUILD_LOG="$NISSHI_ROOT.log"
STATE="${BROKER_STATE:-${TMPDIR:-/tmp}/wasm-kafka-broker.$(id -u)}"
# The checkout: cargo there uses the toolchain rust-toolchain.toml pins (nisshi needs 1.96+).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

install() {
  if [ "${1:-}" = --background ]; then
    [ -x "$NISSHI" ] && return 0
    echo "building the test broker (nisshi $NISSHI_VERSION, once: 20 to 27 minutes on 2 cores) in the background; its log: $BUILD_LOG" >&2
    ( install >/dev/null 2>&1 ) &
    return 0
  fi
  [ -x "$NISSHI" ] && return 0
  mkdir -p "$CACHE"
  # One build at a time (a background build and a later `install`, or two checkouts): the
  # second waits for the first, then finds the binary.
  exec 9>"$NISSHI_ROOT.lock"
  if ! flock -n 9; then
    echo "waiting for the test broker's build to finish (its log: $BUILD_LOG)..." >&2
    flock 9
  fi
  [ -x "$NISSHI" ] && return 0
  echo "building the test broker, nisshi $NISSHI_VERSION (once; about 37 minutes of CPU time, 20 to 27 minutes on 2 cores), log: $BUILD_LOG" >&2
  if ! (cd "$ROOT" && cargo install nisshi --version "$NISSHI_VERSION" --locked \
      --no-default-features --features "$NISSHI_FEATURES" --root "$NISSHI_ROOT") >"$BUILD_LOG" 2>&1; then
    echo "building nisshi failed; the end of $BUILD_LOG:" >&2
    tail -n 30 "$BUILD_LOG" >&2
    return 1
  fi
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
  # NISSHI: the tests that start brokers of their own use this build.
  BROKER_STATE="$STATE" KAFKA_BROKER=$(cat "$STATE/addr") NISSHI="$NISSHI" "$@"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  install|start|stop|topic|run) "$cmd" "$@" ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
