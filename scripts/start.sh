#!/usr/bin/env bash
# One command from a fresh Debian / Raspberry Pi OS machine to a running agent: installs the
# build dependencies, builds kdelta in release mode and runs `kdelta start` (zero config:
# data in ./kdelta-data, HTTP API on 127.0.0.1:7878, system sensors every 10 s).
# Extra arguments go to `kdelta start`, e.g. ./scripts/start.sh --listen 0.0.0.0:7878
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p kdelta
exec "${CARGO_TARGET_DIR:-target}/release/kdelta" start "$@"
