#!/usr/bin/env bash
# Installs Debian packages (as root, or through sudo), for the build tools scripts/clang.sh
# and scripts/libssl.sh find missing. Fails naming them where there is no apt-get.
set -euo pipefail
if ! command -v apt-get >/dev/null; then
  echo "missing: $*; install them with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq "$@" >/dev/null
