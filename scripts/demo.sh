#!/usr/bin/env bash
# Writes a few records through the destination and reads them back through the source,
# both run by the host as sandboxed instances of the connector component.
set -euo pipefail
host="$1"
topic="demo-$$"
"$(dirname "$0")/broker.sh" topic "$topic" 3
echo "== broker $KAFKA_BROKER, topic $topic"

records=$(for i in 1 2 3 4 5; do
  printf '{"key":{"order":%d},"metadata":{"source":"demo"},"payload":{"after":{"order":%d,"amount":%d}}}\n' "$i" "$i" "$((i * 25))"
done)
echo "== writing through the destination:"
echo "$records"
echo "$records" | "$host" write -c "servers=$KAFKA_BROKER" -c "topic=$topic"

echo "== reading back through the source, as text (without --format text: OpenCDC JSON Lines, data as base64):"
"$host" read -c "servers=$KAFKA_BROKER" -c "topic=$topic" -c readFromBeginning=true --max 5 --format text
