#!/usr/bin/env bash
# Check a kdelta .deb: control fields, the files it must carry, and their modes.
#
#   deploy/pi/check-deb.sh target/deb/kdelta_0.1.0_arm64.deb [ARCH]
#
# ARCH (arm64, amd64, armhf) defaults to the one in the file name. Prints dpkg-deb --info and
# --contents, then exits non-zero naming every missing or wrong item.
set -euo pipefail

deb="${1:?usage: check-deb.sh DEB [ARCH]}"
[ -f "$deb" ] || { echo "check-deb: $deb not found" >&2; exit 1; }
arch="${2:-$(basename "$deb" .deb | sed 's/.*_//')}"

info=$(dpkg-deb --info "$deb")
contents=$(dpkg-deb --contents "$deb")
echo "check-deb: $deb ($(stat -c %s "$deb") bytes)"
printf '%s\n' "$info" | sed 's/^/  | /'
printf '%s\n' "$contents" | sed 's/^/  | /'

errors=0
err() { echo "check-deb: MISSING/WRONG: $*" >&2; errors=$((errors + 1)); }

field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = kdelta ] || err "Package: $(field Package)"
[ "$(field Architecture)" = "$arch" ] || err "Architecture: $(field Architecture), want $arch"
version=$(field Version)
[ "$(basename "$deb")" = "kdelta_${version}_${arch}.deb" ] || err "file name, want kdelta_${version}_${arch}.deb"
field Depends | grep -q 'libc6' || err "Depends lacks libc6: $(field Depends)"
field Depends | grep -q 'adduser' || err "Depends lacks adduser: $(field Depends)"

# path and mode that must be in the data archive
want_file() {
    local path="$1" mode="$2" line
    line=$(printf '%s\n' "$contents" | awk -v p="./$path" '$6 == p')
    if [ -z "$line" ]; then err "file /$path"; return; fi
    case "$line" in "$mode "*) ;; *) err "/$path mode: ${line%% *}, want $mode" ;; esac
}
want_file usr/bin/kdelta -rwxr-xr-x
want_file lib/systemd/system/kdelta.service -rw-r--r--
want_file etc/kdelta/kdelta.toml -rw-r-----
want_file usr/share/doc/kdelta/raspberry-pi.md -rw-r--r--

# control members
for member in postinst prerm postrm conffiles; do
    printf '%s\n' "$info" | grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\*? *$member( |$)" \
        || err "control member $member"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null | grep -qx /etc/kdelta/kdelta.toml \
    || err "conffiles does not list /etc/kdelta/kdelta.toml"

# The binary inside must be for the package's architecture.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/kdelta 2>/dev/null || true
if [ -f "$tmp/usr/bin/kdelta" ]; then
    machine=$(od -An -tx1 -j18 -N2 "$tmp/usr/bin/kdelta" | tr -d ' \n')
    case "$arch:$machine" in
        arm64:b700|amd64:3e00|armhf:2800) ;;
        *) err "usr/bin/kdelta is ELF machine $machine, not $arch" ;;
    esac
fi

if [ "$errors" -gt 0 ]; then
    echo "check-deb: FAILED ($errors problems)" >&2
    exit 1
fi
echo "check-deb: OK"
