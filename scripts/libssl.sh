#!/usr/bin/env bash
# The benchmark's yardstick, librdkafka, is built with TLS (the rdkafka crate's `ssl`
# feature) against the system's OpenSSL, found through pkg-config. Installs Debian's
# libssl-dev and pkg-config if they are missing. Only `just bench` needs them: nothing else
# builds librdkafka.
set -euo pipefail
command -v pkg-config >/dev/null && pkg-config --exists openssl && exit 0
"$(dirname "$0")/apt-install.sh" libssl-dev pkg-config
