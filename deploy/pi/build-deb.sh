#!/usr/bin/env bash
# Build the kdelta Debian package with cargo-deb and check it.
#
#   deploy/pi/build-deb.sh [arm64|amd64] [--no-build]
#
#   arm64       (default) cross release build via deploy/pi/build.sh, then
#               target/deb/kdelta_<version>_arm64.deb
#   amd64       native release build with the machine's cargo, then target/deb/kdelta_<version>_amd64.deb
#   --no-build  package the binary that is already there
#
# Packaging metadata: [package.metadata.deb] in agent/Cargo.toml; maintainer scripts:
# deploy/pi/debian/. Needs cargo-deb (deploy/pi/install-toolchain.sh installs it).
set -euo pipefail

arch=arm64
build=1
for arg in "$@"; do
    case "$arg" in
        arm64|amd64) arch="$arg" ;;
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
here="$root/deploy/pi"

cargo deb --version >/dev/null 2>&1 || {
    echo "build-deb: cargo-deb missing; run deploy/pi/install-toolchain.sh" >&2
    exit 1
}

pkgid=$(cargo pkgid -p kdelta)          # path+file:///.../agent#kdelta@0.1.0
version=${pkgid##*[#@]}
out="$root/target/deb/kdelta_${version}_${arch}.deb"
mkdir -p "$root/target/deb"
rm -f "$out"

# The binary is already stripped by [profile.release] strip = "symbols"; --no-strip keeps
# cargo-deb from running a host strip on a foreign binary.
case "$arch" in
    arm64)
        triple=aarch64-unknown-linux-gnu
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/cross}"
        if [ "$build" -eq 1 ]; then
            "$here/build.sh" --release --target "$triple"
        fi
        bin="$CARGO_TARGET_DIR/$triple/release/kdelta"
        [ -x "$bin" ] || { echo "build-deb: $bin missing (build it first)" >&2; exit 1; }
        cargo deb -p kdelta --target "$triple" --no-build --no-strip --output "$out"
        ;;
    amd64)
        if [ "$build" -eq 1 ]; then
            nice -n 19 cargo build --release -p kdelta
        fi
        bin="${CARGO_TARGET_DIR:-$root/target}/release/kdelta"
        [ -x "$bin" ] || { echo "build-deb: $bin missing (build it first)" >&2; exit 1; }
        cargo deb -p kdelta --no-build --no-strip --output "$out"
        ;;
esac

"$here/check-deb.sh" "$out" "$arch"
echo "build-deb: $out"
