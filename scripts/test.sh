#!/usr/bin/env bash
# Runs the whole test suite (unit, property, crash and end-to-end tests with real agent
# processes). Needs no running services: MQTT tests use an embedded broker. Installs
# Debian's faketime (agents with wrong clocks, tests/e2e/clock.rs) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-deps.sh
if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq faketime
fi
# Not KDELTA_*: that prefix is agent configuration (and the agents under test inherit it).
export FAKETIME_REQUIRED=1
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace "$@"
