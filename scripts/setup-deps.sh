#!/usr/bin/env bash
# Installs what building kdelta needs on Debian / Raspberry Pi OS: a C compiler (bundled
# SQLite), pkg-config, and a Rust toolchain >= 1.94 (rustup's if present, else Debian's
# rustc-web). Idempotent and quiet when everything is already there.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

rust_ok() {
    command -v cargo >/dev/null 2>&1 || return 1
    local v
    v=$(rustc --version 2>/dev/null | awk '{print $2}')
    [ "$(printf '%s\n1.94.0\n' "$v" | sort -V | head -1)" = "1.94.0" ]
}

if ! rust_ok && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

if [ ${#need_apt[@]} -gt 0 ] || ! rust_ok; then
    "${sudo_cmd[@]}" apt-get update -qq
    [ ${#need_apt[@]} -eq 0 ] || "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}"
fi

if ! rust_ok; then
    if apt-cache show rustc-web >/dev/null 2>&1; then
        # Debian ships a current Rust as rustc-web/cargo-web (bookworm and newer).
        "${sudo_cmd[@]}" apt-get install -y -qq rustc-web cargo-web
    else
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
rust_ok || { echo "error: could not install Rust >= 1.94" >&2; exit 1; }
