#!/usr/bin/env bash
# ring, the crypto under TLS and SCRAM, compiles C and assembly for wasm32-wasip2, which
# only clang targets. Installs Debian's clang if there is none (as root, or through sudo).
set -euo pipefail
command -v clang >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
  echo "clang is missing: install it with your package manager (ring needs it for wasm32-wasip2)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq clang >/dev/null
