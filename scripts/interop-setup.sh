#!/usr/bin/env bash
# The interop tests' Kafka client: librdkafka through the confluent-kafka wheel, in a venv in
# the cache (tests/interop/kclient.py runs with its python). Idempotent: quick when installed.
set -euo pipefail

CONFLUENT_KAFKA_VERSION=2.16.1
CACHE="${WASM_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasm-kafka}"
VENV="$CACHE/venv"
PY="$VENV/bin/python"

installed() {
  [ -x "$PY" ] && "$PY" -c "import sys, confluent_kafka, importlib.metadata as m; sys.exit(m.version('confluent-kafka') != '$CONFLUENT_KAFKA_VERSION')" 2>/dev/null
}

installed && exit 0
[ -x "$PY" ] || python3 -m venv "$VENV"
echo "installing confluent-kafka $CONFLUENT_KAFKA_VERSION into $VENV..." >&2
"$PY" -m pip install --quiet --disable-pip-version-check "confluent-kafka==$CONFLUENT_KAFKA_VERSION" >&2
installed || { echo "confluent-kafka $CONFLUENT_KAFKA_VERSION does not import from $VENV" >&2; exit 1; }
