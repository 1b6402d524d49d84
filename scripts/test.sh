#!/usr/bin/env bash
# Runs the whole test suite (unit, property, crash and end-to-end tests with real agent
# processes). Needs no running services: MQTT tests use an embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace "$@"
