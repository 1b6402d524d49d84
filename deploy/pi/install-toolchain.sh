#!/usr/bin/env bash
# Install what cross-building kdelta for 64-bit Raspberry Pi OS needs, from Debian's own packages.
#
#   deploy/pi/install-toolchain.sh [--no-cargo-deb]
#
# Idempotent and quick when everything is already there: it asks dpkg first and only runs apt
# when something is missing, so CI pays for `apt-get update` once per new machine.
#
# What it installs and why:
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross  linker and C compiler for aarch64 (bundled SQLite,
#                                                 ring/zstd C code) against Debian bookworm's glibc 2.36
#   rustc-web, cargo-web                          Debian's Rust (/usr/bin/rustc, /usr/bin/cargo); unlike
#                                                 rustup, Debian ships the aarch64 std as a package
#   libstd-rust-web-dev:arm64                     that std (needs `dpkg --add-architecture arm64`); it
#                                                 pulls in libc6:arm64, which is why qemu runs with -L /
#   qemu-user-static                              runs the aarch64 binary here for the smoke test
#   dpkg-dev, curl                                dpkg-shlibdeps for the .deb's Depends; the smoke test
#   cargo-deb (crates.io, via `cargo install`)    builds the .deb; skipped with --no-cargo-deb
#
# Needs root (or sudo). Runs non-interactively (CI has no stdin).
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
want_cargo_deb=1
for arg in "$@"; do
    case "$arg" in
        --no-cargo-deb) want_cargo_deb=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "install-toolchain: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

if [ ! -r /etc/debian_version ]; then
    echo "install-toolchain: this script uses Debian's packages; on other systems use cross + Docker (see deploy/pi/README.md)" >&2
    exit 1
fi
if [ "$(dpkg --print-architecture)" != "amd64" ]; then
    echo "install-toolchain: expected an amd64 build host, found $(dpkg --print-architecture)" >&2
    exit 1
fi

packages=(
    gcc-aarch64-linux-gnu
    libc6-dev-arm64-cross
    qemu-user-static
    rustc-web
    cargo-web
    libstd-rust-web-dev:arm64
    # On the base image already; listed so a slimmer host fails here, not halfway through CI:
    # dpkg-shlibdeps (cargo-deb's $auto depends) and curl (smoke test).
    dpkg-dev
    curl
)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done

need_arch=0
dpkg --print-foreign-architectures | grep -qx arm64 || need_arch=1

if [ "$need_arch" -eq 0 ] && [ "${#missing[@]}" -eq 0 ]; then
    echo "install-toolchain: Debian packages already installed"
else
    if [ "$need_arch" -eq 1 ]; then
        echo "install-toolchain: adding dpkg architecture arm64"
        $SUDO dpkg --add-architecture arm64
    fi
    echo "install-toolchain: installing ${missing[*]:-(arch index only)}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # The rustc-web family must come as one version for the host and arm64 halves, so install
    # them in one transaction (apt refuses a mismatched libstd-rust-web-dev:arm64 otherwise).
    $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

# Sanity: the three tools the build uses, and the aarch64 std that matches the host rustc.
for tool in /usr/bin/rustc /usr/bin/cargo aarch64-linux-gnu-gcc qemu-aarch64-static; do
    command -v "$tool" >/dev/null || { echo "install-toolchain: $tool missing after install" >&2; exit 1; }
done
sysroot=$(/usr/bin/rustc --print sysroot)
if ! ls "$sysroot"/lib/rustlib/aarch64-unknown-linux-gnu/lib/libstd-*.rlib >/dev/null 2>&1; then
    echo "install-toolchain: no aarch64 std under $sysroot/lib/rustlib (libstd-rust-web-dev:arm64)" >&2
    exit 1
fi
echo "install-toolchain: $(/usr/bin/rustc --version) (Debian), $(aarch64-linux-gnu-gcc -dumpfullversion) aarch64 gcc"

if [ "$want_cargo_deb" -eq 1 ]; then
    # cargo-deb is not packaged by Debian bookworm; build it once with the machine's cargo.
    if cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
        echo "install-toolchain: cargo-deb $CARGO_DEB_VERSION already installed"
    else
        echo "install-toolchain: installing cargo-deb $CARGO_DEB_VERSION from crates.io (a few minutes)"
        nice -n 19 cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    fi
fi
