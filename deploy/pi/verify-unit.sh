#!/usr/bin/env bash
# Check systemd/kdelta.service with `systemd-analyze verify`, on a machine where kdelta may not be
# installed and systemd may not be PID 1 (CI containers).
#
#   deploy/pi/verify-unit.sh [BINARY]
#
# verify refuses a unit whose ExecStart= binary does not exist, so the unit is copied to a temp
# dir and /usr/bin/kdelta is replaced by BINARY, or by target/release/kdelta, or by /bin/true.
# The kdelta user/group and the gpio/i2c/spi groups are not needed: verify does not resolve them
# (systemd only does at start, where the .deb's postinst has created them). Any other warning or
# error fails the script, so a typo in a directive name cannot slip through.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
unit_src="$root/systemd/kdelta.service"

if ! command -v systemd-analyze >/dev/null; then
    echo "verify-unit: systemd-analyze missing; installing Debian's systemd package" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends systemd
fi

bin="${1:-}"
if [ -z "$bin" ]; then
    if [ -x /usr/bin/kdelta ]; then bin=/usr/bin/kdelta
    elif [ -x "$root/target/release/kdelta" ]; then bin="$root/target/release/kdelta"
    else bin=/bin/true
    fi
fi
bin=$(readlink -f "$bin")
[ -x "$bin" ] || { echo "verify-unit: $bin is not executable" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/bin/kdelta |ExecStart=$bin |" "$unit_src" > "$tmp/kdelta.service"
grep -q "^ExecStart=$bin " "$tmp/kdelta.service" || {
    echo "verify-unit: could not find 'ExecStart=/usr/bin/kdelta ' in $unit_src" >&2
    exit 1
}

echo "verify-unit: systemd-analyze verify (ExecStart binary: $bin)"
# --man=no: the Documentation= file exists only once the package is installed.
set +e
out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$tmp/kdelta.service" 2>&1)
rc=$?
set -e
# Lines about *other* units on this machine (a container's own broken units) are not ours.
ours=$(printf '%s\n' "$out" | grep -F "kdelta.service" || true)
[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/  | /'
if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
    echo "verify-unit: FAILED (exit $rc)" >&2
    exit 1
fi
echo "verify-unit: OK"
