#!/usr/bin/env bash
# The benchmark's yardstick, librdkafka, is built with TLS (the rdkafka crate's `ssl`
# feature) against the system's OpenSSL, found through pkg-config. Installs Debian's
# libssl-dev and pkg-config if they are missing (as root, or through sudo). Only `just
# bench` needs them: nothing else builds librdkafka.
set -euo pipefail
command -v pkg-config >/dev/null && pkg-config --exists openssl && exit 0
if ! command -v apt-get >/dev/null; then
  echo "OpenSSL's development files or pkg-config are missing: install them with your package manager (libssl-dev or openssl-devel; the benchmark's librdkafka needs them)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq libssl-dev pkg-config >/dev/null
