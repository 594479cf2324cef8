#!/usr/bin/env bash
# ring, the crypto under TLS and SCRAM, compiles C and assembly for wasm32-wasip2, which
# only clang targets. Installs Debian's clang if there is none.
set -euo pipefail
command -v clang >/dev/null && exit 0
"$(dirname "$0")/apt-install.sh" clang
