#!/usr/bin/env bash
# Cross-build kdelta for a Raspberry Pi with Debian's Rust and the aarch64 GNU toolchain.
#
#   deploy/pi/build.sh [--target TRIPLE] [--release] [-p PACKAGE] [-- CARGO_ARGS...]
#
#   --target   aarch64-unknown-linux-gnu (default; 64-bit Pi OS on Pi 3/4/5/Zero 2 W) or
#              armv7-unknown-linux-gnueabihf (32-bit; needs the armhf packages, see README.md; untested)
#   --release  build the release profile (opt-level "z", fat LTO, panic=abort, stripped); default: dev profile
#   -p         package to build (default kdelta; kdelta-sync is handy while the agent is mid-edit)
#
# The agent is built without its default features: its cargo feature `postgres` (PostgreSQL hub
# replicas, sqlx) stays out of the Pi binary, which must fit deploy/pi/ci-cross.sh's size budget.
# A Pi is a device or a SQLite hub; PostgreSQL hub replicas run x86_64 builds (docs/hub.md).
#
# Prints the binary path, its size and the build time. Toolchain: deploy/pi/install-toolchain.sh.
#
# Why Debian's Rust and not rustup's: rustup cannot fetch the aarch64 std on a machine that reaches
# only the package registries, while Debian ships it as libstd-rust-web-dev:arm64. Debian's cargo
# (1.96) and rustup's (1.95) would keep invalidating each other's fingerprints in one target dir,
# so cross builds go to target/cross/<triple>/ and native builds stay in target/.
set -euo pipefail

target=aarch64-unknown-linux-gnu
profile=dev
package=kdelta
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target="${2:?--target needs a triple}"; shift 2 ;;
        --target=*) target="${1#*=}"; shift ;;
        --release) profile=release; shift ;;
        -p|--package) package="${2:?-p needs a package}"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$target" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf ;;
    *) echo "build.sh: unsupported target $target" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

for tool in /usr/bin/rustc /usr/bin/cargo "$gnu-gcc" "$gnu-ar"; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool not found; run deploy/pi/install-toolchain.sh" >&2
        exit 1
    }
done

triple_env=$(echo "$target" | tr 'a-z-' 'A-Z_')   # AARCH64_UNKNOWN_LINUX_GNU
triple_cc=$(echo "$target" | tr '-' '_')         # aarch64_unknown_linux_gnu

export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/cross}"
export "CARGO_TARGET_${triple_env}_LINKER=$gnu-gcc"
# So `build.sh -- test` (or cargo test with the same env) runs target binaries under qemu.
export "CARGO_TARGET_${triple_env}_RUNNER=qemu-${gnu%%-*}-static -L /"
# The cc crate (bundled SQLite in libsqlite3-sys, ring, zstd-sys, ...) reads these per-target names.
export "CC_${triple_cc}=$gnu-gcc"
export "CXX_${triple_cc}=$gnu-g++"
export "AR_${triple_cc}=$gnu-ar"

cargo_profile=()
# Every default feature of the agent is for hubs (`postgres`); none for devices.
features=()
[ "$package" = kdelta ] && features=(--no-default-features)
out_profile=debug
if [ "$profile" = release ]; then
    cargo_profile=(--release)
    out_profile=release
fi

echo "build.sh: $(/usr/bin/cargo --version) / $(/usr/bin/rustc --version | cut -d' ' -f1-2), target $target, profile $out_profile, package $package"
start=$(date +%s)
nice -n 19 /usr/bin/cargo build "${cargo_profile[@]}" "${features[@]}" --target "$target" -p "$package" "${extra[@]}"
elapsed=$(( $(date +%s) - start ))

bin_name=$package
[ "$package" = kdelta ] || bin_name=""
if [ -n "$bin_name" ]; then
    bin="$CARGO_TARGET_DIR/$target/$out_profile/$bin_name"
    if [ ! -x "$bin" ]; then
        echo "build.sh: expected binary $bin is missing" >&2
        exit 1
    fi
    size=$(stat -c %s "$bin")
    if command -v file >/dev/null; then
        echo "build.sh: $(file -b "$bin" | cut -d, -f1-2,6-)"
    fi
    echo "build.sh: binary $bin"
    echo "build.sh: size $size bytes ($(( (size + 524288) / 1048576 )) MiB)"
fi
echo "build.sh: build time ${elapsed}s"
